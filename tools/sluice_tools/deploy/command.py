"""The `sluice deploy` and `sluice doctor` commands (thin: options → pipeline / doctor)."""

from __future__ import annotations

from pathlib import Path

import click

from sluice_tools.options import only_option, stage_options


@click.command("deploy")
@stage_options
@only_option("Deploy only this app (ingest, cleanse, router, consumers/NAME); repeatable.")
@click.option("--no-doctor", is_flag=True, help="Skip the doctor check at the end.")
@click.option(
    "--build-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Render the apps' copies here (default .sluice/build/<prefix>-<stage>).",
)
@click.option(
    "--plan",
    is_flag=True,
    help="Print each function's policy and environment and the changes; apply nothing.",
)
def deploy_command(
    stage: str,
    prefix: str | None,
    only: tuple[str, ...],
    no_doctor: bool,
    build_dir: Path | None,
    plan: bool,
) -> None:
    """Deploy a stage: platform and consumer stacks, each Chalice app in order (shared/
    vendored), the settings Chalice cannot make, then doctor. Running it twice is harmless.

    Each app is deployed from a copy whose .chalice/config.json and IAM policies are
    rendered from its deploy.yaml for this prefix, stage, region and account; the
    checkout is never written to. AWS_ENDPOINT_URL (or stage local/test) targets moto's
    server: the resources moto's CloudFormation skips are then applied from the same
    templates.
    """
    from sluice_tools.deploy.pipeline import DeployError, deploy_stage
    from sluice_tools.deploy.target import Target

    target = Target.from_env(stage, prefix)
    if plan:
        from sluice_tools.deploy.plan import PlanError, plan_stage

        try:
            plan_stage(target, list(only) or None, build_dir=build_dir, log=click.echo)
        except PlanError as exc:
            click.echo(f"plan failed: {exc}", err=True)
            raise SystemExit(1) from exc
        return
    try:
        report = deploy_stage(
            target, list(only) or None, build_dir=build_dir, doctor=not no_doctor, log=click.echo
        )
    except DeployError as exc:
        click.echo(f"deploy failed: {exc}", err=True)
        raise SystemExit(1) from exc
    click.echo(
        f"deployed {len(report.apps)} app(s) in {report.seconds:.1f} s "
        f"(rendered copies in {report.build_root})"
    )
    if not report.ok:
        raise SystemExit(1)


@click.command("doctor")
@stage_options
@only_option("Check only these apps' functions.")
def doctor_command(stage: str, prefix: str | None, only: tuple[str, ...]) -> None:
    """Check a deployed stage: DLQs, partial batch responses, on-failure destinations,
    filter policies, alarms, and resources named in functions' environments. Exit 1 if not OK.
    """
    from sluice_tools.deploy.doctor import run_doctor
    from sluice_tools.deploy.target import Target

    report = run_doctor(Target.from_env(stage, prefix), only=list(only) or None)
    click.echo(report.render())
    if not report.ok:
        raise SystemExit(1)
