"""Several apps deployed by few Chalice processes: each app's outcome and output are its own,
and an app that fails does not stop the others sharing its process."""

from __future__ import annotations

import json
from pathlib import Path

from sluice_tools.deploy.chalice_deploy import chalice_deploy_all
from sluice_tools.deploy.target import Target


def _app(root: Path, name: str, body: str) -> Path:
    app = root / name
    (app / ".chalice").mkdir(parents=True)
    config = {"version": "2.0", "app_name": name, "stages": {"test": {}}}
    (app / ".chalice" / "config.json").write_text(json.dumps(config))
    (app / "app.py").write_text(body)
    return app


def test_each_app_reports_its_own_failure_and_the_next_app_still_runs(
    tmp_path: Path, aws_env: None
) -> None:
    first = _app(tmp_path, "first", "raise RuntimeError('first app is broken')\n")
    second = _app(tmp_path, "second", "import chalicelib_missing_in_second\n")
    target = Target(stage="test", root=tmp_path, region="us-east-1")

    results = chalice_deploy_all([first, second], target, workers=1)  # one process for both

    assert set(results) == {first, second}
    assert not results[first].ok
    assert not results[second].ok
    assert "first app is broken" in results[first].output
    assert "first app is broken" not in results[second].output
    assert "chalicelib_missing_in_second" in results[second].output
    assert "chalice deploy of second failed" in results[second].failure()
