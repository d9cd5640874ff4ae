"""`sluice logs`' readable lines, its reading of the local log files, and the local console."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from sluice_tools.cli import main
from sluice_tools.local.worker import console_line
from sluice_tools.logs.command import format_line
from sluice_tools.trace.logsource import LocalLogFiles, LogLine, LogQuery, parse_since

FN = "sluice-consumer-index-local-consume"


def _doc(message: str, at: str = "2026-12-04T10:00:00.000Z", **fields: object) -> str:
    return json.dumps(
        {
            "timestamp": at,
            "level": "INFO",
            "message": message,
            "logger": "chalicelib.service",
            "service": "consumer-index",
            "stage": "local",
            "function_name": FN,
            "cold_start": False,
            **fields,
        }
    )


def test_a_line_shows_its_structured_fields_in_order_then_the_extra_ones():
    text = _doc(
        "paid",
        duration_ms=12.5,
        chunk_id="c-1",
        correlation_id="ingest-1",
        request_id="req-1",
        order_id="o-1",
        amount=12.5,
        note="two words",
    )
    shown = format_line(LogLine.parse(FN, text))
    assert shown == (
        f"2026-12-04 10:00:00.000 {FN} INFO    paid request_id=req-1 correlation_id=ingest-1 "
        'chunk_id=c-1 duration_ms=12.5 order_id=o-1 amount=12.5 note="two words"'
    )


def test_the_local_console_shows_a_functions_extra_fields():
    line = console_line("fn", _doc("paid", order_id="o-1", amount=12.5))
    assert line is not None
    assert line.endswith("paid order_id=o-1 amount=12.5")


def test_logs_reads_local_files_by_function_part_since_and_filter(aws_env, tmp_path: Path):
    (tmp_path / f"{FN}.log").write_text(
        "\n".join(
            [
                _doc("old", at="2026-12-04T09:00:00.000Z"),
                _doc("new one", at="2026-12-04T10:00:00.000Z", correlation_id="ingest-a"),
                _doc("new two", at="2026-12-04T10:00:01.000Z", correlation_id="ingest-b"),
            ]
        )
        + "\n"
    )
    (tmp_path / "sluice-cleanse-local-cleanse.log").write_text(_doc("cleansed") + "\n")
    source = LocalLogFiles(tmp_path)
    since = parse_since("2026-12-04T09:30:00Z")
    found = source.read(LogQuery(functions=[FN], since_ms=since))
    assert [line.get("message") for line in found] == ["new one", "new two"]
    result = CliRunner().invoke(
        main,
        [
            "logs",
            "index",
            "--stage",
            "local",
            "--log-dir",
            str(tmp_path),
            "--since",
            "2026-12-04T09:30:00Z",
            "--correlation-id",
            "ingest-b",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"2026-12-04 10:00:01.000 {FN} INFO    new two correlation_id=ingest-b"
    ]
    result = CliRunner().invoke(
        main, ["logs", "nothing-like-it", "--stage", "local", "--log-dir", str(tmp_path)]
    )
    assert result.exit_code != 0
    assert "no function matches 'nothing-like-it'" in result.output
