"""Fixtures of the local runtime's tests: a clean AWS environment and small toy functions.

Runtime fixtures are module-scoped (one moto server and its workers per module); each module
brings its own up, so the state of one never leaks into the next.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from support.env import aws_environment
from support.waiting import wait_until

from sluice_tools.local.runtime import Options

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

# A stand-in app for runtime semantics: each handler echoes what it saw to ECHO_URL.
TOY_APP = '''
import importlib.util, json, os, sys
import boto3

_sqs = None


def _echo(doc):
    global _sqs
    if _sqs is None:
        _sqs = boto3.client("sqs")
    _sqs.send_message(QueueUrl=os.environ["ECHO_URL"], MessageBody=json.dumps(doc))


def record(event, context):
    _echo({
        "function": context.function_name,
        "event": event,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "memory": context.memory_limit_in_mb,
        "request_id": context.aws_request_id,
        "arn": context.invoked_function_arn,
        "env": {k: os.environ.get(k) for k in (
            "TOY_SETTING", "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_TIMEOUT",
            "AWS_ENDPOINT_URL", "LAMBDA_TASK_ROOT")},
        "path0": sys.path[0],
        "dev_packages_visible": importlib.util.find_spec("click") is not None,
    })
    return {"ok": True}


def partial(event, context):
    """Reports every message whose body contains "fail" in batchItemFailures."""
    _echo({"function": context.function_name,
           "bodies": [r["body"] for r in event["Records"]]})
    return {"batchItemFailures": [
        {"itemIdentifier": r["messageId"]} for r in event["Records"] if "fail" in r["body"]]}


def boom(event, context):
    _echo({"function": context.function_name, "boom": True})
    raise RuntimeError("boom")
'''


def toy_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", TOY_APP)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def aws_env() -> Iterator[None]:
    """The suite's test environment (support.env) for a whole module: runtimes are per module."""
    with aws_environment():
        yield


class Echo:
    """The queue toy functions write what they saw to."""

    def __init__(self, sqs: Any, url: str) -> None:
        self.sqs = sqs
        self.url = url

    def _receive(self) -> list[dict[str, Any]]:
        """One page of echoes (deleted as read): empty when the queue is empty."""
        page = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10).get("Messages")
        for message in page or []:
            self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        return [json.loads(message["Body"]) for message in page or []]

    def take(self, count: int) -> list[dict[str, Any]]:
        """Wait for `count` echoes (the functions are still running); fails if they never come."""
        got: list[dict[str, Any]] = []

        def enough() -> bool:
            got.extend(self._receive())
            return len(got) >= count

        wait_until(enough, what=f"{count} echoes (got {len(got)}: {got})")
        return got

    def drain(self) -> list[dict[str, Any]]:
        """Every echo in the queue. After `runtime.wait_drained()` no invocation is running,
        so this is all the functions echoed: what is not here never came."""
        got: list[dict[str, Any]] = []
        while page := self._receive():
            got += page
        return got


@contextlib.contextmanager
def toy_runtime(
    tmp_path_factory: pytest.TempPathFactory, make: Callable[[Any], T], **options: Any
) -> Iterator[T]:
    """A started runtime without a deploy, quiet, with the toys `make` builds in moto taken
    over; `options` are more `Options`."""
    from sluice_tools.local.runtime import LocalRuntime, Options

    state = tmp_path_factory.mktemp("local-state")
    runtime = LocalRuntime(Options(deploy=False, state_dir=state, console=False, **options))
    runtime.start()
    try:
        made = make(runtime)
        runtime.take_over()
        yield made
    finally:
        runtime.stop()


def queue(sqs: Any, name: str, **attributes: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return url, arn


def depth(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attrs.values())


def repo_tree(dest: Path) -> Path:
    """A copy of the repository to deploy from and change (the checkout stays untouched)."""
    skip = shutil.ignore_patterns(
        ".git", ".venv", ".nox", ".sluice", "vendor", "__pycache__", "*_cache", "deployed"
    )
    shutil.copytree(ROOT, dest, ignore=skip, symlinks=True)
    return dest


def pipeline_options(tree: Path, state: str) -> Options:
    """The local runtime of a whole-pipeline test deployed from `tree`: its state under
    `.sluice/<state>` (git-ignored: the deploy's chalice zip cache survives between runs), no
    console, a failed SQS batch back after 6 s, async retries after 0.5 and 1 s, schedules
    fired by the test itself."""
    return Options(
        state_dir=ROOT / ".sluice" / state,
        root=tree,
        console=False,
        visibility_timeout_s=6,
        async_retry_delays_s=(0.5, 1.0),
        schedules=False,
    )
