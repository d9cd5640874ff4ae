"""A consumer's filter policy admits "every registered type" through the registry marker:
the deploy's templates, the ledger's and new-consumer's policy readers all see the
registry's names, so a type added to types/ reaches the index with no other edit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from sluice.registry import REGISTERED_TYPES, load_registry
from sluice_tools.deploy.templates import stage_stacks
from sluice_tools.ledger.filters import consumer_policies
from sluice_tools.scaffold.contract import consumer_filter_policies

ROOT = Path(__file__).resolve().parents[2]


def subscription_policies(repo: Path) -> dict[str, dict[str, object]]:
    """Each consumer stack's subscription filter policy as the deploy renders it."""
    found = {}
    for spec in stage_stacks(repo, "dev")[1:]:
        for sub in spec.resources("AWS::SNS::Subscription").values():
            found[spec.role.removeprefix("consumer-")] = sub["Properties"]["FilterPolicy"]
    return found


NEW_TYPE = next(
    n
    for n in ("shipment", *(f"shipment{i}" for i in range(2, 99)))
    if n not in load_registry(ROOT / "types")
)


def with_new_type(tmp_path: Path) -> Path:
    """A copy of what stage_stacks reads, with a type added to the registry (NEW_TYPE)."""
    repo = tmp_path / "repo"
    for part in ("infra", "consumers", "types"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns(".chalice"))
    folder = repo / "types" / NEW_TYPE
    folder.mkdir()
    (folder / "type.json").write_text(json.dumps({"version": 1, "natural_key": "shipment_id"}))
    schema = {"type": "object", "properties": {"shipment_id": {"type": "string"}}}
    (folder / "schema.json").write_text(json.dumps(schema))
    (folder / "rules.json").write_text("{}")
    return repo


def test_the_index_file_names_no_type_and_its_deployed_policy_lists_the_registry() -> None:
    raw = (ROOT / "consumers/index/resources.yaml").read_text(encoding="utf-8")
    names = load_registry(ROOT / "types").names()
    assert REGISTERED_TYPES in raw
    assert not [n for n in names if f'"{n}"' in raw]

    [index] = [s for s in stage_stacks(ROOT, "dev") if s.role == "consumer-index"]
    [sub] = index.resources("AWS::SNS::Subscription").values()
    assert sub["Properties"]["FilterPolicy"] == {"record_type": list(names)}
    assert yaml.safe_load(index.text) == index.body  # what CloudFormation gets
    assert REGISTERED_TYPES not in index.text.split("\n", 1)[1]


def test_a_type_added_to_the_registry_reaches_every_policy_reader(tmp_path: Path) -> None:
    repo = with_new_type(tmp_path)
    before = subscription_policies(ROOT)

    after = subscription_policies(repo)

    names = sorted([*load_registry(ROOT / "types").names(), NEW_TYPE])
    assert after["index"] == {"record_type": names}
    assert {k: v for k, v in after.items() if k != "index"} == {
        k: v for k, v in before.items() if k != "index"
    }
    ledger = consumer_policies(repo / "consumers")
    assert ledger["index"].policy.matches({"record_type": NEW_TYPE})
    assert not ledger["index"].policy.matches({"record_type": "invoice"})
    scaffold = dict(consumer_filter_policies(repo))
    assert NEW_TYPE in scaffold[Path("consumers/index/resources.yaml")]["record_type"]
