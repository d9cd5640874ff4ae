"""`sluice local run` starts from the state its last verified deploy left when nothing that
deploy read changed (persist.save_deployed / load_deployed), and deploys otherwise."""

from __future__ import annotations

from pathlib import Path

import boto3
from moto import mock_aws

from sluice_tools.local import persist


def _queues() -> list[str]:
    sqs = boto3.client("sqs", region_name="us-east-1")
    return sorted(url.rsplit("/", 1)[-1] for url in sqs.list_queues().get("QueueUrls", []))


def test_the_deployed_state_comes_back_only_for_the_source_it_was_deployed_from(
    tmp_path: Path, aws_env: None
) -> None:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="deployed-raw")["QueueUrl"]
        assert persist.save_deployed(tmp_path, "source-a") > 0
        sqs.delete_queue(QueueUrl=url)
        sqs.create_queue(QueueName="uploaded-later")

        assert persist.load_deployed(tmp_path, "source-b") is None  # changed: deploy
        assert _queues() == ["uploaded-later"]  # and moto is left as it was

        saved = persist.load_deployed(tmp_path, "source-a")
        assert saved is not None
        assert saved.source_hash == "source-a"
        assert _queues() == ["deployed-raw"]


def test_a_state_whose_save_did_not_finish_is_never_used(tmp_path: Path, aws_env: None) -> None:
    with mock_aws():
        boto3.client("sqs", region_name="us-east-1").create_queue(QueueName="deployed-raw")
        persist.save_deployed(tmp_path, "source-a")
        (tmp_path / persist.DEPLOYED_HASH).unlink()  # what a kill during the save leaves
        assert persist.load_deployed(tmp_path, "source-a") is None
        assert persist.load_deployed(tmp_path / "nothing-here", "source-a") is None
