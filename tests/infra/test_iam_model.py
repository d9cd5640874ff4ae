"""The IAM matcher the policy tests rely on: wildcards, explicit Deny, call → action mapping."""

from __future__ import annotations

from infra.iam_model import allows, required

POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["sqs:SendMessage"],
            "Resource": "arn:aws:sqs:*:*:sluice-test-raw",
        },
        {
            "Effect": "Allow",
            "Action": "s3:Get*",
            "Resource": ["arn:aws:s3:::sluice-test-landing/*"],
        },
        {
            "Effect": "Deny",
            "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::sluice-test-landing/secret/*",
        },
    ],
}


def test_an_allow_matches_action_and_resource_wildcards() -> None:
    assert allows(POLICY, "sqs:SendMessage", "arn:aws:sqs:us-east-1:123456789012:sluice-test-raw")
    assert allows(POLICY, "S3:GetObjectVersion", "arn:aws:s3:::sluice-test-landing/a/b")


def test_nothing_outside_the_listed_actions_and_resources_is_allowed() -> None:
    assert not allows(POLICY, "sqs:SendMessage", "arn:aws:sqs:us-east-1:1:sluice-test-raw-dlq")
    assert not allows(POLICY, "sqs:DeleteMessage", "arn:aws:sqs:us-east-1:1:sluice-test-raw")
    assert not allows(POLICY, "s3:GetObject", "arn:aws:s3:::sluice-test-landing")


def test_an_explicit_deny_wins_over_an_allow() -> None:
    assert not allows(POLICY, "s3:GetObject", "arn:aws:s3:::sluice-test-landing/secret/x")


def test_batch_and_read_calls_map_to_their_iam_actions() -> None:
    url = "http://127.0.0.1:1/123456789012/sluice-test-raw"
    assert required(
        {"service": "sqs", "operation": "SendMessageBatch", "params": {"QueueUrl": url}}
    ) == [("sqs:SendMessage", "arn:aws:sqs:us-east-1:123456789012:sluice-test-raw")]
    assert required(
        {
            "service": "s3",
            "operation": "GetObject",
            "params": {"Bucket": "b", "Key": "k", "VersionId": "v"},
        }
    ) == [("s3:GetObjectVersion", "arn:aws:s3:::b/k")]
    assert required({"service": "sts", "operation": "GetCallerIdentity", "params": {}}) == []
