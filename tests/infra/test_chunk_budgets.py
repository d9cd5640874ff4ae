"""Chunk budgets of the deployed stages fit every hop: SQS 1 MiB, SNS 256 KiB, Lambda 6 MB.

That the router cuts what it publishes to fit SNS, whatever its setting, is checked on the
router itself (tests/router/test_deploy_config.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sluice.config import (
    ATTRIBUTE_RESERVE_BYTES,
    SQS_MAX_MESSAGE_BYTES,
    Settings,
)
from sluice_tools.deploy.render import render_for

ROOT = Path(__file__).resolve().parents[2]
DEPLOYED_STAGES = ("dev", "prod", "local")
LAMBDA_PAYLOAD_BYTES = 6 * 1000 * 1000  # synchronous invocation payload (the SQS batch)
SQS_EVENT_RECORD_OVERHEAD = 2048  # messageId, receipt handle, attributes, ARNs per record


def chunk_budget(app: str, stage: str) -> int:
    rendered = render_for(ROOT / app, stage)
    [function, *_] = sorted(rendered.policies)
    env = {**rendered.environment(function), "AWS_REGION": "us-east-1"}
    return Settings.from_env(env).chunk_max_bytes


def batch_size(app: str) -> int:
    source = (ROOT / app / "app.py").read_text()
    found = re.search(r"@app\.on_sqs_message\(.*batch_size=(\d+)", source)
    assert found, f"{app}/app.py has no SQS handler with a batch size"
    return int(found.group(1))


@pytest.mark.parametrize("stage", DEPLOYED_STAGES)
def test_ingest_and_cleanse_cut_chunks_that_fit_an_sqs_message_with_attributes(stage: str):
    for app in ("ingest", "cleanse"):
        assert chunk_budget(app, stage) + ATTRIBUTE_RESERVE_BYTES <= SQS_MAX_MESSAGE_BYTES


@pytest.mark.parametrize(("app", "upstream"), [("cleanse", "ingest"), ("router", "cleanse")])
@pytest.mark.parametrize("stage", DEPLOYED_STAGES)
def test_a_full_batch_of_the_largest_chunks_fits_one_lambda_invocation(
    app: str, upstream: str, stage: str
):
    message = chunk_budget(upstream, stage) + ATTRIBUTE_RESERVE_BYTES + SQS_EVENT_RECORD_OVERHEAD
    assert batch_size(app) * message <= LAMBDA_PAYLOAD_BYTES


def test_the_raw_and_clean_queues_and_their_dlqs_take_a_1_mib_message():
    from support.platform import platform_template

    resources = platform_template()["Resources"]
    for name in ("RawQueue", "RawDeadLetterQueue", "CleanQueue", "CleanDeadLetterQueue"):
        assert resources[name]["Properties"]["MaximumMessageSize"] == SQS_MAX_MESSAGE_BYTES
