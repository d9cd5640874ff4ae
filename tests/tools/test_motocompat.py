"""Sluice's moto compatibility layer refuses a moto it was not written for, loudly."""

from __future__ import annotations

import re
from pathlib import Path

import moto
import pytest

from sluice_tools import motocompat
from sluice_tools.motocompat import MotoCompatError, guard, server
from sluice_tools.motocompat.cfn import fill_gaps

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_moto_is_the_one_the_patches_were_written_for() -> None:
    guard(server.PATCHED)  # every patched name is where the patches expect it


def test_the_project_pins_the_moto_the_layer_was_verified_on() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"{motocompat.PIN}"' in pyproject


def test_another_moto_version_is_refused_with_what_to_do(monkeypatch) -> None:
    monkeypatch.setattr(moto, "__version__", "5.3.0")

    with pytest.raises(MotoCompatError, match=re.escape("moto 5.3.0 is installed")) as error:
        guard()
    assert motocompat.PIN in str(error.value)
    with pytest.raises(MotoCompatError):
        server.quiet()  # before patching anything
    with pytest.raises(MotoCompatError):
        fill_gaps(None, None, None)  # type: ignore[arg-type]  # before touching the target


def test_a_patched_name_that_moved_is_named(monkeypatch) -> None:
    from moto.dynamodb.models import DynamoDBBackend

    monkeypatch.delattr(DynamoDBBackend, "transact_write_items")

    with pytest.raises(MotoCompatError, match=r"DynamoDBBackend\.transact_write_items"):
        guard(server.PATCHED)


def test_an_instance_attribute_is_checked_in_the_class_that_sets_it() -> None:
    guard([("moto.sqs.models:Queue", "lambda_event_source_mappings")])
    with pytest.raises(MotoCompatError, match=r"Queue\.no_such_attribute"):
        guard([("moto.sqs.models:Queue", "no_such_attribute")])
    with pytest.raises(MotoCompatError, match="no_such_module"):
        guard([("moto.no_such_module", "anything")])
