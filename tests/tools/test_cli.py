"""The `sluice` command line, driven in-process through click's CliRunner."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from sluice_tools.cli import main
from sluice_tools.options import _default_prefix, _stage


@pytest.fixture
def runner(aws_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    # The options read SLUICE_STAGE: no stage unless a test sets one. A checkout of its own,
    # so a `sluice local up` running in the real one does not lend its stage.
    monkeypatch.delenv("SLUICE_STAGE")
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "platform.yaml").write_text("Resources: {}\n")
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def _listed_commands(help_text: str) -> list[str]:
    """The names of the command lines of every "Commands:" section of a help text."""
    names: list[str] = []
    for section in help_text.split("Commands:")[1:]:
        for line in section.splitlines()[1:]:
            if not line.startswith("  "):
                break
            if not line.startswith("   "):  # continuation lines are indented more
                names.append(line.split()[0])
    return names


def test_help_lists_each_command_once(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--help"])

    assert result.exit_code == 0
    assert "Operate Sluice" in result.output
    listed = _listed_commands(result.output)
    assert sorted(listed) == sorted(main.commands)
    for name in main.commands:
        lines = [line for line in result.output.splitlines() if line.split()[:1] == [name]]
        assert len(lines) == 1, (name, lines)


def test_version_prints_the_installed_distribution_version(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--version"])

    assert result.exit_code == 0
    assert result.output.strip() == f"sluice, version {version('sluice-tools')}"


def test_info_prints_every_platform_resource_name_of_the_stage(runner: CliRunner) -> None:
    result = runner.invoke(main, ["info", "--stage", "dev"])

    assert result.exit_code == 0, result.output
    for name in (
        "sluice-dev-landing",
        "sluice-dev-quarantine",
        "sluice-dev-curated",
        "sluice-dev-payloads",
        "sluice-dev-raw",
        "sluice-dev-raw-dlq",
        "sluice-dev-clean",
        "sluice-dev-clean-dlq",
        "sluice-dev-records",
        "sluice-dev-alerts",
        "sluice-dev-idempotency",
        "sluice-dev-ledger",
    ):
        assert name in result.output.split(), name


def test_info_json_maps_roles_to_names(runner: CliRunner) -> None:
    result = runner.invoke(main, ["info", "--stage", "prod", "--prefix", "acme", "--json"])

    assert result.exit_code == 0, result.output
    names = json.loads(result.output)
    assert names["landing_bucket"] == "acme-prod-landing"
    assert names["raw_dlq"] == "acme-prod-raw-dlq"
    assert names["records_table"] == "acme-prod-records"
    assert names["records_topic"] == "acme-prod-records"


def test_info_reads_the_stage_from_the_environment(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICE_STAGE", "qa")

    result = runner.invoke(main, ["info"])

    assert result.exit_code == 0, result.output
    assert "sluice-qa-landing" in result.output


@pytest.mark.parametrize("stage", ["Dev", "my stage", "1dev", ""])
def test_info_rejects_an_invalid_stage_with_a_clear_error(runner: CliRunner, stage: str) -> None:
    result = runner.invoke(main, ["info", "--stage", stage])

    assert result.exit_code == 2
    assert "Invalid value for '--stage'" in result.output
    assert "lower-case letters" in result.output


def test_info_rejects_an_invalid_prefix_naming_the_option(runner: CliRunner) -> None:
    result = runner.invoke(main, ["info", "--stage", "dev", "--prefix", "Acme"])

    assert result.exit_code == 2
    assert "Invalid value for '--prefix'" in result.output


def test_info_requires_a_stage(runner: CliRunner) -> None:
    result = runner.invoke(main, ["info"])

    assert result.exit_code == 2
    assert "Missing option '--stage'" in result.output


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, click.Command]]:
    """Every leaf command under `group`, with its command line (`dlq redrive`)."""
    found = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
        else:
            found.append((" ".join((*path, name)), command))
    return found


def _option(command: click.Command, flag: str) -> click.Option | None:
    return next((p for p in command.params if isinstance(p, click.Option) and flag in p.opts), None)


def test_every_command_on_a_stage_takes_the_one_stage_and_prefix_options(
    runner: CliRunner,
) -> None:
    """Each command with --stage has the shared pair (sluice_tools.options): the same
    validation, environment variables and local-up defaults, and says so in its help."""
    on_stage = [(line, c) for line, c in _commands(main) if _option(c, "--stage")]
    assert len(on_stage) >= 10, [line for line, _ in on_stage]
    for line, command in on_stage:
        stage, prefix = _option(command, "--stage"), _option(command, "--prefix")
        assert prefix is not None, line
        assert stage is not None
        assert (stage.name, stage.envvar, stage.callback) == ("stage", "SLUICE_STAGE", _stage)
        assert (prefix.name, prefix.envvar) == ("prefix", "SLUICE_RESOURCE_PREFIX")
        assert prefix.default is _default_prefix, line
        result = runner.invoke(main, [*line.split(), "--help"])
        assert result.exit_code == 0, result.output
        assert "SLUICE_STAGE" in result.output, line
        assert "--prefix TEXT" in result.output, line
    result = runner.invoke(main, ["dlq", "list", "--stage", "Not_A_Stage"])
    assert result.exit_code == 2
    assert "--stage" in result.output
