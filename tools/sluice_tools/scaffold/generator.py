"""Render a consumer app, its resources and its tests from the templates in `templates/`.

Text files are templates with `{{token}}` placeholders (plain replacement, so `${...}` of
CloudFormation and Python braces stay as they are); `.chalice/config.json` and the app's
`deploy.yaml` (its settings and grants, rendered per stage by `sluice deploy`) are built as
data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from sluice_tools import deps
from sluice_tools.scaffold.contract import (
    check_filter_policy,
    declared_attributes,
    parse_filter_policy,
)
from sluice_tools.scaffold.errors import ScaffoldError

# Lambda function names are `sluice-consumer-<name>-<stage>-consume`: with a name of at most
# 20 characters and a stage of at most 16 they stay within Lambda's (and IAM roles') 64.
NAME_RE = re.compile(r"^[a-z](?:[a-z0-9]|-(?=[a-z0-9])){0,19}$")
FUNCTION = "consume"
DEFAULT_TIMEOUT_S = 60
DEFAULT_MEMORY_MB = 256
_TOKEN = re.compile(r"\{\{(\w+)\}\}")
EVENT_SOURCE_PREFIX = "sluice."  # the pipeline's events come from sluice.<stage>


@dataclass(frozen=True)
class ConsumerSpec:
    """What a consumer is made of: its name, kind and filter policy, and its sizing.

    With `events` (pipeline event detail-types) it is an event consumer: an EventBridge rule
    on the stage's bus feeds its queue, and it has no filter policy.
    """

    name: str
    filter_policy: Mapping[str, Any]
    direct: bool = False
    timeout_s: int = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB
    events: tuple[str, ...] = ()

    @property
    def app_name(self) -> str:
        return f"sluice-consumer-{self.name}"

    @property
    def kind(self) -> str:
        """The template folder: `event`, `direct` or `sqs`."""
        return "event" if self.events else "direct" if self.direct else "sqs"


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ScaffoldError(
            f"invalid consumer name {name!r}: use 1-20 lower-case letters, digits and single "
            "'-', starting with a letter and not ending with '-'"
        )
    return name


def find_repo(start: Path, *, exact: bool = False) -> Path:
    """The monorepo root: `start` or (unless `exact`, as for `--repo`) its nearest parent
    holding noxfile.py and router/."""
    start = start.resolve()
    for folder in (start,) if exact else (start, *start.parents):
        if (folder / "noxfile.py").is_file() and (folder / "router").is_dir():
            return folder
    where = "at" if exact else "at or above"
    raise ScaffoldError(f"no Sluice repository (noxfile.py and router/) {where} {start}")


def render(text: str, values: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        try:
            return values[match.group(1)]
        except KeyError:
            raise ScaffoldError(f"template token {match.group(0)} has no value") from None

    return _TOKEN.sub(replace, text)


def _templates(kind: str) -> list[tuple[str, Traversable]]:
    """(relative output path, template) of the common templates and those of `kind`."""
    root = resources.files("sluice_tools.scaffold") / "templates"
    found: list[tuple[str, Traversable]] = []

    def walk(folder: Traversable, prefix: str) -> None:
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            elif entry.name.endswith(".tmpl"):
                found.append((prefix + entry.name.removesuffix(".tmpl"), entry))

    for part in ("common", kind):
        walk(root / part, "")
    return found


def _grant(sid: str, actions: list[str], *resources: str) -> dict[str, Any]:
    return {"sid": sid, "actions": actions, "resources": list(resources)}


def declaration(spec: ConsumerSpec) -> dict[str, Any]:
    """The consumer's `deploy.yaml` as data: its settings and what `consume` may do.

    Resources are references (`queue:consumer-<name>`), rendered to exact ARNs by
    `sluice deploy` for the prefix, stage, region and account it deploys to.
    """
    own = f"consumer-{spec.name}"
    idempotency = _grant(
        "Idempotency",
        ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"],
        "table:idempotency",
    )
    if spec.events:  # one claim per event id; nothing of the ledger, payloads or records
        return _declaration(spec, [*_observability_grants(), idempotency, _trigger_grant(own)])
    grants = [
        *_observability_grants(),
        # the ledger entry and the object's progress; the last writer emits its event
        _grant(
            "Ledger",
            ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:GetItem"],
            "table:ledger",
        ),
        _grant("PipelineEvents", ["events:PutEvents"], "bus:events"),
        _grant("Quarantine", ["s3:PutObject"], "bucket:quarantine/*"),
        _grant("ClaimCheckRead", ["s3:GetObject"], "bucket:payloads/*"),
        _grant("ClaimCheckMissingIs404", ["s3:ListBucket"], "bucket:payloads"),
        idempotency,
    ]
    if spec.direct:
        grants.append(_grant("OnFailureDestination", ["sqs:SendMessage"], f"queue:{own}-failures"))
    else:
        grants.append(_trigger_grant(own))
        # records that fail in the handler (sluice.stage)
        grants.append(_grant("DeadLetters", ["sqs:SendMessage"], f"queue:{own}-dlq"))
    return _declaration(spec, grants)


def _observability_grants() -> list[dict[str, Any]]:
    return [
        _grant(
            "Logs",
            ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "self:log-group",
        ),
        _grant(
            "Tracing",
            [
                "xray:PutTraceSegments",
                "xray:PutTelemetryRecords",
                "xray:PutSpans",
                "xray:PutSpansForIndexing",
            ],
            "*",
        ),
    ]


def _trigger_grant(queue: str) -> dict[str, Any]:
    return _grant(
        "Trigger",
        [
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "sqs:ChangeMessageVisibility",  # a chunk claimed elsewhere waits
        ],
        f"queue:{queue}",
    )


def _declaration(spec: ConsumerSpec, grants: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "defaults": {
            "timeout": spec.timeout_s,
            "memory": spec.memory_mb,
            "xray": True,  # off on the emulator, whatever this says
            "environment": {"LOG_LEVEL": "INFO"},
        },
        "functions": {FUNCTION: {"grants": grants}},
    }


DECLARATION_HEADER = """\
# consumers/{name}: how its function runs and what it may do, in any stage. `sluice deploy`
# renders this into .chalice/config.json and an IAM policy for the prefix, stage, region
# and account it deploys to. Grants name resources by reference: queue:NAME, topic:NAME,
# table:NAME, bucket:NAME[/path] (NAME without `<prefix>-<stage>-`), parameter:PATH,
# self:log-group. Per-stage overrides go under `stages: {{prod: {{memory: 1024}}}}`.
"""


def declaration_text(spec: ConsumerSpec) -> str:
    body = yaml.safe_dump(declaration(spec), sort_keys=False, default_flow_style=None, width=100)
    return DECLARATION_HEADER.format(name=spec.name) + body


def chalice_config(spec: ConsumerSpec) -> dict[str, Any]:
    """The committed `.chalice/config.json`: the app's name; stages are rendered at deploy."""
    return {"version": "2.0", "app_name": spec.app_name, "autogen_policy": False}


def render_app(spec: ConsumerSpec) -> dict[str, str]:
    """Every file of the consumer, by path relative to the repo root, as text."""
    values = {
        "name": spec.name,
        "filter_policy": json.dumps(spec.filter_policy, separators=(", ", ": ")),
        "timeout": str(spec.timeout_s),
        "visibility_timeout": str(6 * spec.timeout_s),
        "event_pattern": json.dumps(event_pattern(spec.events), separators=(", ", ": ")),
        "event_tuple": python_tuple(spec.events),
    }
    app_dir = f"consumers/{spec.name}"
    tests_dir = f"tests/consumers/{spec.name}"
    test_module = f"test_{spec.name.replace('-', '_')}.py"
    files: dict[str, str] = {}
    for relative, template in _templates(spec.kind):
        if relative.startswith("tests/"):
            leaf = relative.removeprefix("tests/")
            target = f"{tests_dir}/{test_module if leaf == 'test_consumer.py' else leaf}"
        elif relative == "conftest.py":
            target = f"{tests_dir}/conftest.py"
        else:
            target = f"{app_dir}/{relative}"
        # A template of the kind replaces a common one of the same path (written after it).
        files[target] = render(template.read_text(encoding="utf-8"), values)
    files[f"{app_dir}/.chalice/config.json"] = _json(chalice_config(spec))
    files[f"{app_dir}/deploy.yaml"] = declaration_text(spec)
    return dict(sorted(files.items()))


def python_tuple(values: Sequence[str]) -> str:
    """A tuple of strings as ruff formats it: `("a",)`, `("a", "b")`."""
    items = ", ".join(json.dumps(v) for v in values)
    return f"({items},)" if len(values) == 1 else f"({items})"


def locked_requirements(repo: Path, name: str, files: Mapping[str, str]) -> str:
    """The consumer's requirements.txt: its needs as the repository's lock pins them (the
    shipped apps' versions, with hashes); without a lock, its requirements.in as it is."""
    in_path = f"consumers/{name}/{deps.IN_FILE}"
    lock = repo / deps.LOCK
    if not lock.is_file():
        return files[in_path]
    return deps.app_requirements(lock.read_text(encoding="utf-8"), files[in_path], in_path)


def _json(doc: Any) -> str:
    return json.dumps(doc, indent=2) + "\n"


def _check_new(repo: Path, name: str) -> None:
    validate_name(name)
    for existing in (repo / "consumers" / name, repo / "tests" / "consumers" / name):
        if existing.exists():
            raise ScaffoldError(f"consumer {name!r} exists already ({existing.relative_to(repo)})")


def new_consumer(repo: Path, name: str, filter_json: str, *, direct: bool = False) -> list[Path]:
    """Check everything, then write the consumer's files; returns the paths written.

    Refuses (`ScaffoldError`) an invalid or existing name and a filter policy that is not a
    JSON object or names an attribute or value the router never sets. Writes nothing then.
    """
    _check_new(repo, name)
    policy = parse_filter_policy(filter_json)
    check_filter_policy(policy, declared_attributes(repo))
    return _write(repo, ConsumerSpec(name=name, filter_policy=policy, direct=direct))


def new_event_consumer(repo: Path, name: str, events: Sequence[str]) -> list[Path]:
    """Check everything, then write an event consumer's files; returns the paths written.

    Refuses (`ScaffoldError`) an invalid or existing name, no event, and an event name
    that is not a pipeline event (listing those that are). Writes nothing then.
    """
    _check_new(repo, name)
    wanted = tuple(dict.fromkeys(check_events(events)))
    return _write(repo, ConsumerSpec(name=name, filter_policy={}, events=wanted))


def check_events(events: Sequence[str]) -> Sequence[str]:
    """The event names, if each one is a pipeline event's detail-type (`sluice.events`)."""
    from sluice.events import DETAIL_TYPES

    if not events:
        raise ScaffoldError("name at least one event with --on-event")
    for event in events:
        if event not in DETAIL_TYPES:
            raise ScaffoldError(
                f"unknown event {event!r}: the pipeline's events are "
                + ", ".join(repr(known) for known in DETAIL_TYPES)
            )
    return events


def event_pattern(events: Sequence[str]) -> dict[str, Any]:
    """The rule's pattern: the pipeline's events (any stage's source) of these detail-types."""
    return {"source": [{"prefix": EVENT_SOURCE_PREFIX}], "detail-type": list(events)}


def _write(repo: Path, spec: ConsumerSpec) -> list[Path]:
    name = spec.name
    files = render_app(spec)
    files[f"consumers/{name}/{deps.TXT_FILE}"] = locked_requirements(repo, name, files)
    written = []
    for relative, text in files.items():
        path = repo / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
