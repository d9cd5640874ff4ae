"""`sluice local up|run|down|fire`: the local runtime from the command line.

State lives under `.sluice/local/` of the repository: `up.json` (pid, endpoint, stage,
prefix and region of a running `up`), `logs/<function>.log`, the deploy's build copies, the
extracted zips and the emulator's saved state (`moto-state.pickle`: `up` restores it).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from sluice_tools.localstate import STATE_FILE, read_state
from sluice_tools.localstate import alive as _alive
from sluice_tools.localstate import state_dir as _state_dir

DEFAULT_UP_PORT = 5000
DRAIN_TIMEOUT_S = 900
WATCH_S = 1.5  # how often a running `up` looks for a deploy into it


def _root() -> Path:
    from sluice_tools.deploy.target import repo_root

    return repo_root()


def _err(line: str) -> None:
    click.echo(line, err=True)


def _options(root: Path, port: int, quiet: bool, **extra: Any) -> Any:
    from sluice_tools.local.runtime import Options

    return Options(port=port, state_dir=_state_dir(root), root=root, console=not quiet, **extra)


def sample_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "samples" / "incoming").rglob("*") if p.is_file())


def landing_key(path: Path) -> str:
    """`.../incoming/<type>/<file>` keeps its key from `incoming/`; any other file becomes
    `incoming/<its folder's name>/<file>` (the folder names the record type)."""
    parts = path.resolve().parts
    if "incoming" in parts[:-1]:
        at = len(parts) - 1 - parts[::-1].index("incoming")
        return "/".join(parts[at:])
    return f"incoming/{path.parent.name}/{path.name}"


def upload_key(path: Path, record_type: str | None, registered: tuple[str, ...]) -> str:
    """The landing key `sluice local run` uploads `path` to: `incoming/<record_type>/<file>`
    with a type given, else `landing_key`'s, whose type must be registered. `ValueError`
    (naming --type and the registered types) when the type is unknown or cannot be told."""
    known = ", ".join(registered) or "none"
    if record_type is not None:
        if record_type not in registered:
            raise ValueError(f"--type {record_type!r} is not a registered record type ({known})")
        return f"incoming/{record_type}/{path.name}"
    key = landing_key(path)
    folder = key.split("/")[1]
    if folder not in registered:
        raise ValueError(
            f"{path}: cannot tell its record type (neither under incoming/<type>/ nor in a "
            f"folder named for one: {folder!r} is not a registered type); give --type TYPE "
            f"(registered: {known}); it is uploaded to incoming/TYPE/{path.name}"
        )
    return key


def _write_state(state_dir: Path, runtime: Any) -> Path:
    path = state_dir / STATE_FILE
    path.write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "endpoint": runtime.endpoint,
                "stage": runtime.options.stage,
                "prefix": runtime.prefix,
                "region": runtime.emulator.region,
                "at": time.time(),
            }
        )
    )
    return path


def _serve_until_signalled(runtime: Any, state_dir: Path) -> None:
    """Keep the runtime up until SIGINT or SIGTERM; the state file says where it is."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    path = _write_state(state_dir, runtime)
    for line in banner(runtime, state_dir):
        _err(line)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        _err("stopping ...")
        path.unlink(missing_ok=True)


def export_line(runtime: Any) -> str:
    """The shell line that points the aws CLI and `sluice` commands at the running stage."""
    from sluice_tools.local.emulator import CREDENTIALS  # the operator's: allowed everything

    env = {
        "AWS_ENDPOINT_URL": runtime.endpoint,
        "AWS_REGION": runtime.emulator.region,
        "AWS_DEFAULT_REGION": runtime.emulator.region,
        **CREDENTIALS,
        "SLUICE_STAGE": runtime.options.stage,
        "SLUICE_RESOURCE_PREFIX": runtime.prefix,
    }
    return "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())


def timing_lines(options: Any) -> list[str]:
    """How local timing differs from AWS's, for the banner."""
    delays = ", ".join(f"{d:g}" for d in options.async_retry_delays_s)
    failed = (
        f"a failed SQS batch is visible again after {options.failed_visibility_s} s "
        "(AWS: the queue's visibility timeout, 6 x the function's)"
        if options.failed_visibility_s is not None
        else "a failed SQS batch waits for its queue's visibility timeout, as on AWS"
    )
    schedules = (
        "schedules fire on their period from `up`; `sluice local fire FUNCTION` fires one now"
        if options.schedules
        else "schedules never fire; `sluice local fire FUNCTION` fires one"
    )
    return [
        "local timing differs from AWS:",
        f"  {failed}, so a message that keeps failing reaches its DLQ within a minute",
        f"  async retries (S3, SNS, schedules) after {delays} s (AWS: about 1 and 2 minutes)",
        f"  {schedules}",
    ]


def banner(runtime: Any, state_dir: Path) -> list[str]:
    return [
        f"\nsluice local is up: {runtime.endpoint} (stage {runtime.options.stage}, "
        f"prefix {runtime.prefix}, region {runtime.emulator.region})",
        f"  aws --endpoint-url {runtime.endpoint} s3 ls",
        f"  {export_line(runtime)}",
        f"  logs: {state_dir / 'logs'}/<function>.log; stop: Ctrl-C or `sluice local down`",
        "  `sluice deploy --stage local` into it is picked up at once (workers reload)",
        *(f"  {line}" for line in timing_lines(runtime.options)),
    ]


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


@click.group("local")
def local_group() -> None:
    """Run the whole pipeline on this machine: moto's server plus a local Lambda runtime.

    The stage `local` is deployed into moto with `sluice deploy`; functions run their
    deployed zips in worker processes; events are delivered as Lambda would.
    """


@local_group.command("up")
@click.option("--port", default=DEFAULT_UP_PORT, show_default=True, help="moto's port.")
@click.option("--detach", is_flag=True, help="Start in the background; stop with `down`.")
@click.option("--quiet", is_flag=True, help="Function logs only in .sluice/local/logs.")
@click.option("--fresh", is_flag=True, help="Start clean: forget the state of the last `up`.")
def up_command(port: int, detach: bool, quiet: bool, fresh: bool) -> None:
    """Start moto, deploy stage `local`, deliver events until stopped.

    The state of the last `up` (buckets, tables, queues and their messages) is restored, and
    the deploy skipped when nothing it would deploy changed since. A `sluice deploy --stage
    local` into the running `up` takes effect at once. The state is saved when it stops.
    """
    root = _root()
    state_dir = _state_dir(root)
    state = read_state(root)
    if state and _alive(int(state["pid"])):
        raise click.ClickException(f"already up (pid {state['pid']}) at {state['endpoint']}")
    if detach:
        _detach(root, port, state_dir, fresh)
        return
    from sluice_tools.local.runtime import LocalRuntime

    options = _options(root, port, quiet, persist=True, fresh=fresh, watch_s=WATCH_S)
    runtime = LocalRuntime(options, say=_err)
    try:
        runtime.start()
        _serve_until_signalled(runtime, state_dir)
    finally:
        runtime.stop()


def _detach(root: Path, port: int, state_dir: Path, fresh: bool) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    log_path = state_dir / "up.log"
    command = [sys.executable, "-c", "from sluice_tools.cli import main; main()"]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                *command,
                "local",
                "up",
                "--port",
                str(port),
                "--quiet",
                *(["--fresh"] if fresh else []),
            ],
            cwd=root,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _err(f"starting in the background (pid {process.pid}); log: {log_path}")
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        state = read_state(root)
        if state and int(state["pid"]) == process.pid:
            click.echo(state["endpoint"])
            return
        if process.poll() is not None:
            raise click.ClickException(f"`local up` exited ({process.returncode}); see {log_path}")
        time.sleep(1.0)
    raise click.ClickException(f"`local up` did not come up in time; see {log_path}")


@local_group.command("down")
@click.option("--purge", is_flag=True, help="Remove .sluice/ too: saved state, builds, logs.")
def down_command(purge: bool) -> None:
    """Stop a `sluice local up` running in the background (it saves its state first)."""
    from sluice_tools.local.persist import disk_usage

    root = _root()
    state = read_state(root)
    if not state:
        _err("sluice local is not up")
    else:
        pid = int(state["pid"])
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 120  # saving the state takes a few seconds
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.5)
        (_state_dir(root) / STATE_FILE).unlink(missing_ok=True)
        _err(f"stopped (pid {pid})")
    kept = root / ".sluice"
    if purge:
        shutil.rmtree(kept, ignore_errors=True)
        _err(f"removed {kept}")
    else:
        _err(
            f"{kept} keeps {_size(disk_usage(kept))} (saved state, build copies, logs); "
            "`sluice local down --purge` removes it"
        )


@local_group.command("fire")
@click.argument("function")
def fire_command(function: str) -> None:
    """Fire FUNCTION's schedule now (full name or its end, e.g. `pull_sources`)."""
    from sluice_tools.local.emulator import client
    from sluice_tools.local.runtime import fire, target_region
    from sluice_tools.local.topology import read_topology

    state = read_state(_root())
    if not state:
        raise click.ClickException("sluice local is not up (start it with `sluice local up`)")
    endpoint = str(state["endpoint"])
    region = str(state.get("region") or target_region())
    topology = read_topology(lambda service: client(service, endpoint, region))
    try:
        fired = fire(client("sqs", endpoint, region), topology, function, region)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    _err(f"fired the schedule of {fired}")


@local_group.command("run")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the ledger report as JSON.")
@click.option("--keep", is_flag=True, help="Stay up after the report (Ctrl-C to stop).")
@click.option("--quiet", is_flag=True, help="Function logs only in .sluice/local/logs.")
@click.option("--timeout", default=DRAIN_TIMEOUT_S, show_default=True, help="Seconds to drain.")
@click.option(
    "--redeploy", is_flag=True, help="Deploy even if nothing changed since the last run's deploy."
)
@click.option(
    "--type",
    "record_type",
    default=None,
    metavar="TYPE",
    help="Record type of FILES (a registered type, types/<TYPE>/): each is uploaded to "
    "incoming/TYPE/<file name>. Default: from an incoming/<type>/ path, or the file's folder.",
)
def run_command(
    files: tuple[Path, ...],
    as_json: bool,
    keep: bool,
    quiet: bool,
    timeout: int,
    redeploy: bool,
    record_type: str | None,
) -> None:
    """Upload FILES (default: samples/incoming/**) to the landing bucket, run the pipeline
    until every queue and retry is drained, print the ledger.

    A file lands at `incoming/<type>/<file name>` (ingest reads the record type from the
    key): give `--type TYPE`, or keep files under an `incoming/<type>/` folder.

    The stage is deployed into a new emulator, unless nothing `sluice deploy` reads changed
    since the last run: then the emulator starts from the state that deploy (verified by
    doctor) left, kept in .sluice/local/deployed-state.pickle, and the run is seconds.

    Exit status: the ledger's (0 balanced, 1 unaccounted or inconsistent, 2 in flight,
    3 dead letters, 5 the ledger could not be read); 2 as well when the pipeline did not
    drain in time and the ledger found nothing worse.
    """
    from sluice.errors import ConfigError
    from sluice.registry import load_registry
    from sluice_tools.local.runtime import LocalRuntime

    root = _root()
    paths = list(files) or sample_files(root)
    if not paths:
        raise click.ClickException("no files given and no samples under samples/incoming/")
    try:
        registered = load_registry(root / "types").names()
        uploads = [(p, upload_key(p, record_type, registered)) for p in paths]
    except (ConfigError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
    started = time.monotonic()
    options = _options(root, DEFAULT_UP_PORT if keep else 0, quiet, reuse_deploy=not redeploy)
    runtime = LocalRuntime(options, say=_err)
    try:
        runtime.start()
        _err(f"uploading {len(uploads)} file(s) to {runtime.names.landing_bucket} ...")
        runtime.upload(uploads)
        ran_at = time.monotonic()
        drained = runtime.wait_drained(timeout, progress=_progress())
        seconds = time.monotonic() - ran_at
        _err(f"{'drained' if drained else 'NOT drained'} after {seconds:.1f} s")
        code = _report(runtime, root, as_json, drained, seconds, time.monotonic() - started)
        if keep:
            _serve_until_signalled(runtime, _state_dir(root))
    finally:
        runtime.stop()
    sys.exit(code)


def _progress() -> Any:
    last: dict[str, Any] = {"line": "", "at": 0.0}

    def show(depths: dict[str, int]) -> None:
        line = ", ".join(f"{q} {n}" for q, n in sorted(depths.items())) or "finishing"
        now = time.monotonic()
        if line != last["line"] or now - last["at"] > 10:
            _err(f"  waiting: {line}")
            last.update(line=line, at=now)

    return show


def _report(
    runtime: Any, root: Path, as_json: bool, drained: bool, seconds: float, total: float
) -> int:
    from sluice_tools.ledger import Exit, format_report, ledger_report
    from sluice_tools.ledger.command import repo_sinks

    report = ledger_report(
        runtime.names,
        sinks=repo_sinks(root),
        dynamodb=runtime.client("dynamodb"),
        sqs=runtime.client("sqs"),
    )
    code = int(report.exit_code)
    if not drained and code == Exit.BALANCED:
        code = int(Exit.NOT_SETTLED)  # work left over: a balanced-looking report is early
    stats = {
        "drained": drained,
        "pipeline_seconds": round(seconds, 2),
        "total_seconds": round(total, 2),
        "invocations": runtime.activity.invocations,
        "failed_invocations": runtime.activity.failures,
        "dropped_async_events": runtime.activity.dropped,
        "exit_code": code,
    }
    if as_json:
        click.echo(json.dumps({"run": stats, "ledger": report.to_dict()}, indent=2))
    else:
        click.echo(format_report(report))
        click.echo(
            f"local run: {stats['invocations']} invocations "
            f"({stats['failed_invocations']} failed), "
            f"pipeline {seconds:.1f} s, total {total:.1f} s, exit {code}"
        )
    return code
