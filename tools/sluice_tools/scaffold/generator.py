"""Render a consumer app, its resources and its tests from the templates in `templates/`.

Text files are templates with `{{token}}` placeholders (plain replacement, so `${...}` of
CloudFormation and Python braces stay as they are); `.chalice/` JSON is built as data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from sluice_tools.scaffold.contract import (
    check_filter_policy,
    declared_attributes,
    parse_filter_policy,
)
from sluice_tools.scaffold.errors import ScaffoldError

# Lambda function names are `sluice-consumer-<name>-<stage>-consume`: with a name of at most
# 20 characters and a stage of at most 16 they stay within Lambda's (and IAM roles') 64.
NAME_RE = re.compile(r"^[a-z](?:[a-z0-9]|-(?=[a-z0-9])){0,19}$")
STAGES = ("dev", "prod", "local", "test")
FUNCTION = "consume"
DEFAULT_TIMEOUT_S = 60
DEFAULT_MEMORY_MB = 256
_TOKEN = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class ConsumerSpec:
    """What a consumer is made of: its name, kind and filter policy, and its sizing."""

    name: str
    filter_policy: Mapping[str, Any]
    direct: bool = False
    timeout_s: int = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB

    @property
    def app_name(self) -> str:
        return f"sluice-consumer-{self.name}"


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


def _policy_document(spec: ConsumerSpec, stage: str) -> dict[str, Any]:
    fn = f"{spec.app_name}-{stage}-{FUNCTION}"
    p = f"sluice-{stage}"
    statements: list[dict[str, Any]] = [
        {
            "Sid": "Logs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [
                f"arn:aws:logs:*:*:log-group:/aws/lambda/{fn}",
                f"arn:aws:logs:*:*:log-group:/aws/lambda/{fn}:*",
            ],
        },
        {
            "Sid": "Tracing",
            "Effect": "Allow",
            "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
            "Resource": "*",
        },
        {
            "Sid": "Ledger",
            "Effect": "Allow",
            "Action": ["dynamodb:PutItem"],
            "Resource": f"arn:aws:dynamodb:*:*:table/{p}-ledger",
        },
        {
            "Sid": "Quarantine",
            "Effect": "Allow",
            "Action": ["s3:PutObject"],
            "Resource": f"arn:aws:s3:::{p}-quarantine/*",
        },
        {
            "Sid": "ClaimCheckRead",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": f"arn:aws:s3:::{p}-payloads/*",
        },
        {
            "Sid": "ClaimCheckMissingIs404",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": f"arn:aws:s3:::{p}-payloads",
        },
        {
            "Sid": "Idempotency",
            "Effect": "Allow",
            "Action": ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"],
            "Resource": f"arn:aws:dynamodb:*:*:table/{p}-idempotency",
        },
    ]
    if spec.direct:
        statements.append(
            {
                "Sid": "OnFailureDestination",
                "Effect": "Allow",
                "Action": ["sqs:SendMessage"],
                "Resource": f"arn:aws:sqs:*:*:{p}-consumer-{spec.name}-failures",
            }
        )
    else:
        statements.append(
            {
                "Sid": "Trigger",
                "Effect": "Allow",
                "Action": [
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:GetQueueAttributes",
                    "sqs:ChangeMessageVisibility",  # a chunk claimed elsewhere waits (sluice.stage)
                ],
                "Resource": f"arn:aws:sqs:*:*:{p}-consumer-{spec.name}",
            }
        )
        statements.append(
            {
                "Sid": "DeadLetters",  # records that fail in the handler (sluice.stage)
                "Effect": "Allow",
                "Action": ["sqs:SendMessage"],
                "Resource": f"arn:aws:sqs:*:*:{p}-consumer-{spec.name}-dlq",
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def chalice_config(spec: ConsumerSpec) -> dict[str, Any]:
    """`.chalice/config.json`: stages dev, prod, local, test; a policy file per function."""
    stages = {
        stage: {
            "environment_variables": {"SLUICE_STAGE": stage, "LOG_LEVEL": "INFO"},
            "lambda_timeout": spec.timeout_s,
            "lambda_memory_size": spec.memory_mb,
            "xray": stage in ("dev", "prod"),  # no X-Ray daemon on moto or in tests
            "tags": {"sluice:stage": stage, "sluice:app": f"consumer-{spec.name}"},
            "lambda_functions": {FUNCTION: {"iam_policy_file": f"policy-{stage}-{FUNCTION}.json"}},
        }
        for stage in STAGES
    }
    return {"version": "2.0", "app_name": spec.app_name, "autogen_policy": False, "stages": stages}


def render_app(spec: ConsumerSpec) -> dict[str, str]:
    """Every file of the consumer, by path relative to the repo root, as text."""
    values = {
        "name": spec.name,
        "filter_policy": json.dumps(spec.filter_policy, separators=(", ", ": ")),
        "timeout": str(spec.timeout_s),
        "visibility_timeout": str(6 * spec.timeout_s),
    }
    app_dir = f"consumers/{spec.name}"
    tests_dir = f"tests/consumers/{spec.name}"
    test_module = f"test_{spec.name.replace('-', '_')}.py"
    files: dict[str, str] = {}
    for relative, template in _templates("direct" if spec.direct else "sqs"):
        if relative.startswith("tests/"):
            leaf = relative.removeprefix("tests/")
            target = f"{tests_dir}/{test_module if leaf == 'test_consumer.py' else leaf}"
        elif relative == "conftest.py":
            target = f"{tests_dir}/conftest.py"
        else:
            target = f"{app_dir}/{relative}"
        files[target] = render(template.read_text(encoding="utf-8"), values)
    files[f"{app_dir}/.chalice/config.json"] = _json(chalice_config(spec))
    for stage in STAGES:
        files[f"{app_dir}/.chalice/policy-{stage}-{FUNCTION}.json"] = _json(
            _policy_document(spec, stage)
        )
    return dict(sorted(files.items()))


def _json(doc: Any) -> str:
    return json.dumps(doc, indent=2) + "\n"


def new_consumer(repo: Path, name: str, filter_json: str, *, direct: bool = False) -> list[Path]:
    """Check everything, then write the consumer's files; returns the paths written.

    Refuses (`ScaffoldError`) an invalid or existing name and a filter policy that is not a
    JSON object or names an attribute or value the router never sets. Writes nothing then.
    """
    validate_name(name)
    for existing in (repo / "consumers" / name, repo / "tests" / "consumers" / name):
        if existing.exists():
            raise ScaffoldError(f"consumer {name!r} exists already ({existing.relative_to(repo)})")
    policy = parse_filter_policy(filter_json)
    check_filter_policy(policy, declared_attributes(repo))
    files = render_app(ConsumerSpec(name=name, filter_policy=policy, direct=direct))
    written = []
    for relative, text in files.items():
        path = repo / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
