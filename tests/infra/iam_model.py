"""A small IAM matcher: which action and resource an API call needs, and whether a policy allows it.

Enough for Sluice's policies: Allow/Deny statements, Action/Resource lists with `*` and `?`
wildcards. Conditions are not evaluated (none of the function policies use them).
"""

from __future__ import annotations

import fnmatch
from typing import Any

# A transaction's actions need the permission of the call each stands for.
from sluice_tools.local.iam import TRANSACT_ACTIONS

REGION = "us-east-1"
ACCOUNT = "123456789012"

# API operations whose IAM action has another name.
_ACTIONS = {
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "ListObjects"): "s3:ListBucket",
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "CreateMultipartUpload"): "s3:PutObject",
    ("s3", "UploadPart"): "s3:PutObject",
    ("s3", "CompleteMultipartUpload"): "s3:PutObject",
    ("sqs", "SendMessageBatch"): "sqs:SendMessage",
    ("sqs", "DeleteMessageBatch"): "sqs:DeleteMessage",
    ("sqs", "ChangeMessageVisibilityBatch"): "sqs:ChangeMessageVisibility",
    ("sns", "PublishBatch"): "sns:Publish",
}
# Calls every principal may make, whatever its policy says.
_NO_PERMISSION = {("sts", "GetCallerIdentity")}
_BUCKET_LEVEL = {"ListObjectsV2", "ListObjects", "HeadBucket", "GetBucketLocation"}


def required(call: dict[str, Any]) -> list[tuple[str, str]]:
    """(action, resource ARN) pairs a recorded call needs."""
    service, op, params = call["service"], call["operation"], call["params"]
    if (service, op) in _NO_PERMISSION:
        return []
    action = _ACTIONS.get((service, op), f"{service}:{op}")
    if service == "s3":
        bucket = params["Bucket"]
        if op in _BUCKET_LEVEL or "Key" not in params:
            return [(action, f"arn:aws:s3:::{bucket}")]
        if op in {"GetObject", "HeadObject"} and params.get("VersionId"):
            action = "s3:GetObjectVersion"
        return [(action, f"arn:aws:s3:::{bucket}/{params['Key']}")]
    if service == "sqs":
        name = params.get("QueueName") or params["QueueUrl"].rstrip("/").rsplit("/", 1)[-1]
        return [(action, f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}")]
    if service == "sns" and "SubscriptionArn" in params:  # IAM names the subscription's topic
        return [(action, params["SubscriptionArn"].rsplit(":", 1)[0])]
    if service == "sns":
        return [(action, params["TopicArn"])]
    if service == "dynamodb" and "TransactActions" in params:
        return [
            (TRANSACT_ACTIONS[kind], f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}")
            for kind, table in params["TransactActions"]
        ]
    if service == "dynamodb" and params.get("IndexName"):  # a query of an index
        table = f"table/{params['TableName']}/index/{params['IndexName']}"
        return [(action, f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:{table}")]
    if service == "dynamodb":
        tables = params.get("Tables") or [params["TableName"]]
        return [(action, f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{t}") for t in tables]
    if service == "events" and op == "PutEvents":
        return [
            (action, f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{bus}")
            for bus in params["Buses"]
        ]
    raise AssertionError(f"no IAM mapping for {service}:{op} - extend iam_model.required")


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _matches(pattern: str, value: str, case: bool) -> bool:
    if not case:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern)


def allows(policy: dict[str, Any], action: str, resource: str) -> bool:
    """Whether `policy` allows `action` on `resource` (an explicit Deny wins)."""
    allowed = False
    for statement in _listed_statements(policy):
        if not any(_matches(a, action, case=False) for a in _listed(statement.get("Action"))):
            continue
        if not any(_matches(r, resource, case=True) for r in _listed(statement.get("Resource"))):
            continue
        if statement["Effect"] == "Deny":
            return False
        allowed = True
    return allowed


def _listed_statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    statements = policy["Statement"]
    return [statements] if isinstance(statements, dict) else list(statements)


def grants(policy: dict[str, Any]) -> list[tuple[list[str], str]]:
    """(actions, resource) of every Allow statement, one entry per resource."""
    return [
        (_listed(s.get("Action")), resource)
        for s in _listed_statements(policy)
        if s["Effect"] == "Allow"
        for resource in _listed(s.get("Resource"))
    ]
