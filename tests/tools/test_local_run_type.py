"""`sluice local run FILE --type T` uploads to incoming/T/<file name>; a file whose type
cannot be told is refused before anything starts, naming --type and the registered types."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sluice.registry import load_registry
from sluice_tools.cli import main
from sluice_tools.local import commands
from sluice_tools.local.commands import upload_key

ROOT = Path(__file__).resolve().parents[2]
REGISTERED = load_registry(ROOT / "types").names()


class FakeRuntime:
    """Records what `local run` uploads; nothing runs."""

    started: list[FakeRuntime] = []

    def __init__(self, options: Any, say: Any) -> None:
        self.uploads: list[tuple[Path, str]] = []
        self.names = type("Names", (), {"landing_bucket": "landing"})()
        FakeRuntime.started.append(self)

    def start(self) -> None:
        pass

    def upload(self, uploads: list[tuple[Path, str]]) -> list[str]:
        self.uploads.extend(uploads)
        return [key for _, key in uploads]

    def wait_drained(self, timeout: float, progress: Any = None) -> bool:
        return True

    def stop(self) -> None:
        pass


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> list[FakeRuntime]:
    FakeRuntime.started = []
    monkeypatch.setattr("sluice_tools.local.runtime.LocalRuntime", FakeRuntime)
    monkeypatch.setattr(commands, "_root", lambda: ROOT)
    monkeypatch.setattr(commands, "_report", lambda *args: 0)
    return FakeRuntime.started


@pytest.mark.parametrize("record_type", REGISTERED)
def test_type_uploads_any_file_to_incoming_type_file_name(
    tmp_path: Path, fake_run: list[FakeRuntime], record_type: str
) -> None:
    data = tmp_path / "downloads" / "my-export.jsonl"
    data.parent.mkdir()
    data.write_text('{"a": 1}\n')

    result = CliRunner().invoke(main, ["local", "run", str(data), "--type", record_type])

    assert result.exit_code == 0, result.output
    [runtime] = fake_run
    assert runtime.uploads == [(data, f"incoming/{record_type}/my-export.jsonl")]


def test_a_file_whose_type_cannot_be_told_is_refused_before_anything_starts(
    tmp_path: Path, fake_run: list[FakeRuntime]
) -> None:
    data = tmp_path / "data" / "my-orders.jsonl"
    data.parent.mkdir()
    data.write_text('{"a": 1}\n')

    result = CliRunner().invoke(main, ["local", "run", str(data)])

    assert result.exit_code == 2
    assert "cannot tell its record type" in result.output
    assert "give --type TYPE" in result.output
    assert f"(registered: {', '.join(REGISTERED)})" in result.output
    assert fake_run == []  # no emulator, no upload


def test_an_unregistered_type_is_refused_listing_the_registered_ones(
    tmp_path: Path, fake_run: list[FakeRuntime]
) -> None:
    data = tmp_path / "x.jsonl"
    data.write_text("{}\n")

    result = CliRunner().invoke(main, ["local", "run", str(data), "--type", "invoice"])

    assert result.exit_code == 2
    assert f"--type 'invoice' is not a registered record type ({', '.join(REGISTERED)})" in (
        " ".join(result.output.split())
    )
    assert fake_run == []


def test_without_type_the_incoming_layout_or_a_type_folder_gives_the_key(tmp_path: Path) -> None:
    for record_type in REGISTERED:
        nested = tmp_path / "incoming" / record_type / "2026" / "a.csv"
        assert upload_key(nested, None, REGISTERED) == f"incoming/{record_type}/2026/a.csv"
        folder = tmp_path / record_type / "b.jsonl"
        assert upload_key(folder, None, REGISTERED) == f"incoming/{record_type}/b.jsonl"
    with pytest.raises(ValueError, match="'invoice' is not a registered type"):
        upload_key(tmp_path / "incoming" / "invoice" / "c.jsonl", None, REGISTERED)
