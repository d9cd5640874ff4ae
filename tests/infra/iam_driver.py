"""Run one app's handlers on realistic events against moto's server, recording AWS calls.

A script, not a test: `python iam_driver.py APP_DIR PLAN_JSON OUT_JSON PROJECT_DIR` (one
process per app: each has its own `app` and `chalicelib`). PROJECT_DIR holds the app's
`.chalice/config.json` rendered for stage test (the committed one has no stages). Only
calls made inside a handler are recorded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from sluice_tools import lambda_events

RECORDING: list[dict[str, Any]] | None = None
_KEEP = (
    "QueueUrl",
    "QueueName",
    "Bucket",
    "Key",
    "TableName",
    "TopicArn",
    "VersionId",
    "IndexName",
    "SubscriptionArn",
)


def _install_recorder() -> None:
    from botocore import client as botocore_client

    base: Any = botocore_client.BaseClient  # Any: the stubs do not declare _make_api_call
    original = base._make_api_call

    def recorded(self: Any, operation: str, params: dict[str, Any]) -> Any:
        if RECORDING is not None:
            keep = {k: params[k] for k in _KEEP if k in params}
            if "RequestItems" in params:
                keep["Tables"] = sorted(params["RequestItems"])
            if "Entries" in params and operation == "PutEvents":
                keep["Buses"] = sorted(
                    {e.get("EventBusName") or "default" for e in params["Entries"]}
                )
            if "TransactItems" in params:
                # (action kind, table) of each action: IAM checks each as its own call.
                keep["TransactActions"] = sorted(
                    {
                        (kind, op["TableName"])
                        for i in params["TransactItems"]
                        for kind, op in i.items()
                    }
                )
            RECORDING.append(
                {
                    "service": self.meta.service_model.endpoint_prefix,
                    "operation": operation,
                    "params": keep,
                }
            )
        return original(self, operation, params)

    base._make_api_call = recorded


def _sqs_records(queue: str, limit: int) -> list[dict[str, Any]]:
    import boto3

    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    arn = f"arn:aws:sqs:us-east-1:123456789012:{queue}"
    got = sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=limit,
        VisibilityTimeout=0,
        MessageAttributeNames=["All"],
        AttributeNames=["All"],
    ).get("Messages", [])
    return list(lambda_events.received_sqs_event(got, source_arn=arn)["Records"])


def _s3_event(bucket: str, key: str) -> dict[str, Any]:
    """The notification S3 sends for the object's current version (real ETag and version)."""
    import boto3

    head = boto3.client("s3").head_object(Bucket=bucket, Key=key)
    return lambda_events.s3_event(
        bucket,
        key,
        head["ETag"].strip('"'),
        size=head["ContentLength"],
        version_id=head.get("VersionId"),
        sequencer="0A1B2C3D4E5F678901",
        configuration_id="ingest",
        event_time="2026-11-27T00:00:00.000Z",
    )


def _event(client: Any, step: dict[str, Any]) -> dict[str, Any]:
    kind = step["kind"]
    if kind == "s3":
        return _s3_event(step["bucket"], step["key"])
    if kind == "schedule":
        return dict(
            client.events.generate_cw_event(
                source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
            )
        )
    if kind == "sqs":
        return {"Records": _sqs_records(step["queue"], step.get("limit", 10))}
    if kind == "sns":  # the records topic's message, as a direct subscriber receives it
        records = [
            lambda_events.sns_record(
                r["body"],
                step["topic"],
                r["messageId"],
                attributes={k: v["stringValue"] for k, v in r["messageAttributes"].items()},
            )
            for r in _sqs_records(step["queue"], step.get("limit", 1))
        ]
        return {"Records": records}
    raise ValueError(f"unknown event kind {kind}")


def main() -> None:
    global RECORDING
    app_dir, plan_path, out_path, project_dir = sys.argv[1:5]
    plan = json.loads(Path(plan_path).read_text())
    sys.path.insert(0, app_dir)
    _install_recorder()
    import app as module  # type: ignore[import-not-found]  # the app dir, put on sys.path
    import chalice.test
    from chalice.test import Client

    # The test client patches os.environ with the stage's variables around each invocation;
    # the plan's variables go on top of those.
    overrides = dict(plan.get("env", {}))
    patched = chalice.test.BaseClient._patched_env_vars

    def with_overrides(self: Any, environment_variables: dict[str, str]) -> Any:
        return patched(self, {**environment_variables, **overrides})

    chalice.test.BaseClient._patched_env_vars = with_overrides  # type: ignore[method-assign]
    results: dict[str, Any] = {}
    with Client(module.app, stage_name="test", project_dir=project_dir) as client:
        for step in plan["steps"]:
            event = _event(client, step)
            calls: list[dict[str, Any]] = []
            RECORDING = calls
            try:
                payload = client.lambda_.invoke(step["handler"], event).payload
                error = None
            except Exception as exc:  # reported; the calls made so far still count
                payload, error = None, f"{type(exc).__name__}: {exc}"
            finally:
                RECORDING = None
            entry = results.setdefault(step["handler"], {"calls": [], "runs": []})
            entry["calls"] += calls
            entry["runs"].append(
                {
                    "kind": step["kind"],
                    "records": len(event.get("Records", [])),
                    "error": error,
                    "payload": repr(payload)[:300],
                }
            )
    Path(out_path).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
