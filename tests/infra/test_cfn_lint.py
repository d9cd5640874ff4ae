"""cfn-lint passes on every template: platform, consumers, and the apps `chalice package` makes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from infra.stack_model import ROOT

from sluice.registry import load_registry
from sluice_tools.deploy.lint import cfn_lint_command, lint_all, template_files
from sluice_tools.deploy.templates import stage_stacks

pytestmark = pytest.mark.skipif(
    shutil.which(cfn_lint_command()[0]) is None, reason="cfn-lint is not installed"
)


def test_cfn_lint_passes_on_the_platform_and_consumer_templates(tmp_path: Path) -> None:
    # As deployed: the platform's is rendered with a Glue table per registered type.
    paths = [str(p) for p in template_files(stage_stacks(ROOT, "dev"), tmp_path)]

    done = subprocess.run([*cfn_lint_command(), *paths], capture_output=True, text=True)

    assert done.returncode == 0, done.stdout + done.stderr
    tables = Path(paths[0]).read_text(encoding="utf-8").count("Type: AWS::Glue::Table")
    assert tables == len(load_registry(ROOT / "types")) > 0


@pytest.mark.slow
def test_cfn_lint_passes_on_what_chalice_package_makes_of_each_app() -> None:
    notes: list[str] = []

    code = lint_all(ROOT, "test", build=ROOT / ".sluice" / "test-build", log=notes.append)

    assert code == 0, "\n".join(notes)
    assert any("ingest skipped" in n for n in notes)  # on_s3_event: chalice cannot package it
    assert "cleanse" in notes[-1]
    assert "sluice-test-platform" in notes[-1]  # rendered: with its Glue tables
