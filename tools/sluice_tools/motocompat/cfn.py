"""What moto 5.2.5's CloudFormation skips, applied from the SAME templates through the APIs.

(`sluice_tools.motocompat` lists every moto gap; `fill_gaps` refuses another moto version.)

moto reports CREATE_COMPLETE while ignoring these resource types and properties (verified
by tests/infra/test_moto_gaps.py). For an emulator target only; never for AWS.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from sluice_tools.deploy.drift import alarm_arguments, subscription_attributes
from sluice_tools.deploy.target import Target
from sluice_tools.deploy.templates import Resolver, StackSpec, as_json
from sluice_tools.motocompat import guard

# Resource types moto's CloudFormation does not create at all.
SKIPPED_TYPES = (
    "AWS::S3::BucketPolicy",
    "AWS::SQS::QueuePolicy",
    "AWS::SNS::TopicPolicy",
    "AWS::SNS::Subscription",
    "AWS::CloudWatch::Alarm",
    "AWS::Glue::Database",  # deploy/glue.py's catalog of the curated data
    "AWS::Glue::Table",
)
# Properties of resources it does create, but ignores.
SKIPPED_PROPERTIES = {
    "AWS::S3::Bucket": (
        "PublicAccessBlockConfiguration",
        "VersioningConfiguration",
        "LifecycleConfiguration",
        "NotificationConfiguration",
        "LoggingConfiguration",
    ),
    "AWS::DynamoDB::Table": ("TimeToLiveSpecification", "PointInTimeRecoverySpecification"),
}


def fill_gaps(
    target: Target,
    spec: StackSpec,
    resolver: Resolver,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Apply every skipped resource and property of `spec`; returns what was applied."""
    guard()
    applied: list[str] = []
    for logical, resource in spec.resources().items():
        type_ = resource["Type"]
        apply = _APPLY.get(type_)
        if apply is None:
            continue
        props = resolver.properties(logical)
        for what in apply(target, props):
            applied.append(f"{logical}: {what}")
    for line in applied:
        log(f"  {spec.name} (emulator): {line}")
    return applied


def put_function_event_invoke_config(lam: Any, **config: Any) -> None:
    """PutFunctionEventInvokeConfig that replaces the function's config, as on AWS.

    moto 5.2.5 appends each put to a list and answers Get with the first one, so a changed
    destination or retry count would never show; deleting the old config first replaces it.
    """
    with contextlib.suppress(lam.exceptions.ResourceNotFoundException):  # never configured
        lam.delete_function_event_invoke_config(FunctionName=config["FunctionName"])
    lam.put_function_event_invoke_config(**config)


def _bucket_policy(target: Target, props: dict[str, Any]) -> list[str]:
    """The bucket policy, minus Deny statements with a Condition (see `moto_safe_policy`)."""
    policy, dropped = moto_safe_policy(props["PolicyDocument"])
    note = f" ({dropped} conditional Deny left out: moto ignores Conditions)" if dropped else ""
    if not policy["Statement"]:
        return [f"bucket policy on {props['Bucket']} skipped{note}"]
    target.client("s3").put_bucket_policy(Bucket=props["Bucket"], Policy=as_json(policy))
    return [f"bucket policy on {props['Bucket']}{note}"]


def moto_safe_policy(document: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """`document` without its conditional Deny statements, and how many were dropped.

    moto 5.2.5 enforces bucket policies on object requests but ignores `Condition`: the
    TLS-only statement (Deny unless aws:SecureTransport) would deny every request to moto's
    plain-HTTP server. The Condition makes it a no-op for HTTPS clients on AWS, so leaving it
    out on the emulator changes nothing a TLS client would see.
    """
    statements = document.get("Statement") or []
    if isinstance(statements, dict):
        statements = [statements]
    kept = [s for s in statements if not (s.get("Effect") == "Deny" and s.get("Condition"))]
    return {**document, "Statement": kept}, len(statements) - len(kept)


def _queue_policy(target: Target, props: dict[str, Any]) -> list[str]:
    sqs = target.client("sqs")

    def put(url: str, policy: str) -> bool:
        try:
            sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": policy})
        except sqs.exceptions.QueueDoesNotExist:  # deleted by hand: drift repair re-creates it
            return False
        return True

    return _resource_policies("queue", props["Queues"], props["PolicyDocument"], put)


def _topic_policy(target: Target, props: dict[str, Any]) -> list[str]:
    sns = target.client("sns")

    def put(arn: str, policy: str) -> bool:
        sns.set_topic_attributes(TopicArn=arn, AttributeName="Policy", AttributeValue=policy)
        return True

    return _resource_policies("topic", props["Topics"], props["PolicyDocument"], put)


def _resource_policies(
    kind: str, targets: list[str], document: dict[str, Any], put: Callable[[str, str], bool]
) -> list[str]:
    """`put` each target's policy, minus conditional Denies (TLS-only; `moto_safe_policy`);
    a policy left without statements is not put (an empty policy is an error). `put` says
    False when the target does not exist."""
    policy, dropped = moto_safe_policy(document)
    note = f" ({dropped} conditional Deny left out)" if dropped else ""
    done = []
    for target in targets:
        name = target.rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        if not policy["Statement"]:
            done.append(f"{kind} policy on {name} skipped{note}")
        elif put(target, as_json(policy)):
            done.append(f"{kind} policy on {name}{note}")
        else:
            done.append(f"{kind} policy on {name} skipped: no such {kind}")
    return done


def _subscription(target: Target, props: dict[str, Any]) -> list[str]:
    sns = target.client("sns")
    # subscribe is idempotent for the same topic, protocol and endpoint; the attributes are
    # set again one by one so a changed filter policy is applied on a re-deploy.
    arn = sns.subscribe(
        TopicArn=props["TopicArn"],
        Protocol=props["Protocol"],
        Endpoint=props["Endpoint"],
        ReturnSubscriptionArn=True,
    )["SubscriptionArn"]
    for key, value in subscription_attributes(props).items():
        sns.set_subscription_attributes(
            SubscriptionArn=arn, AttributeName=key, AttributeValue=value
        )
    return [f"subscription {props['Protocol']}:{props['Endpoint'].rsplit(':', 1)[-1]}"]


def _alarm(target: Target, props: dict[str, Any]) -> list[str]:
    target.client("cloudwatch").put_metric_alarm(**alarm_arguments(props))
    return [f"alarm {props['AlarmName']}"]


def _bucket(target: Target, props: dict[str, Any]) -> list[str]:
    s3, bucket, done = target.client("s3"), props["BucketName"], []
    if "NotificationConfiguration" in props:
        raise NotImplementedError(
            f"{bucket}: NotificationConfiguration in a template is not filled in for moto; "
            "notifications are chalice deploy's (on_s3_event)"
        )
    if "PublicAccessBlockConfiguration" in props:
        block = {k: bool(v) for k, v in props["PublicAccessBlockConfiguration"].items()}
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=block)
        done.append(f"public access block on {bucket}")
    if "VersioningConfiguration" in props:
        status = props["VersioningConfiguration"]["Status"]
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": status})
        done.append(f"versioning {status} on {bucket}")
    if "LoggingConfiguration" in props:  # after the log bucket's policy (template order)
        logging = props["LoggingConfiguration"]
        enabled = {"TargetBucket": logging["DestinationBucketName"]}
        enabled["TargetPrefix"] = logging.get("LogFilePrefix", "")
        s3.put_bucket_logging(Bucket=bucket, BucketLoggingStatus={"LoggingEnabled": enabled})
        done.append(f"access logs of {bucket} to {enabled['TargetBucket']}")
    if "LifecycleConfiguration" in props:
        rules = [lifecycle_rule(r) for r in props["LifecycleConfiguration"]["Rules"]]
        s3.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": rules}
        )
        done.append(f"lifecycle ({len(rules)} rules) on {bucket}")
    return done


def lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule in the shape of the S3 API."""
    out: dict[str, Any] = {"Status": rule["Status"]}
    if "Id" in rule:
        out["ID"] = rule["Id"]
    out["Filter"] = {"Prefix": rule.get("Prefix", "")}
    if "ExpirationInDays" in rule:
        out["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    if "NoncurrentVersionExpiration" in rule:
        days = rule["NoncurrentVersionExpiration"]["NoncurrentDays"]
        out["NoncurrentVersionExpiration"] = {"NoncurrentDays": int(days)}
    if "AbortIncompleteMultipartUpload" in rule:
        days = rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
        out["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": int(days)}
    unknown = set(rule) - {
        "Id",
        "Status",
        "Prefix",
        "ExpirationInDays",
        "NoncurrentVersionExpiration",
        "AbortIncompleteMultipartUpload",
    }
    if unknown:
        raise NotImplementedError(f"lifecycle rule keys {sorted(unknown)} are not converted")
    return out


def _table(target: Target, props: dict[str, Any]) -> list[str]:
    ddb, table, done = target.client("dynamodb"), props["TableName"], []
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        current = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        wanted = "ENABLED" if ttl.get("Enabled") else "DISABLED"
        if current.get("TimeToLiveStatus") != wanted:  # re-enabling is an error on AWS
            ddb.update_time_to_live(
                TableName=table,
                TimeToLiveSpecification={
                    "AttributeName": ttl["AttributeName"],
                    "Enabled": bool(ttl.get("Enabled")),
                },
            )
            done.append(f"TTL on {table}.{ttl['AttributeName']}")
    pitr = props.get("PointInTimeRecoverySpecification")
    if pitr:
        enabled = bool(pitr.get("PointInTimeRecoveryEnabled"))
        ddb.update_continuous_backups(
            TableName=table,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": enabled},
        )
        done.append(f"point-in-time recovery on {table}")
    return done


def _glue_database(target: Target, props: dict[str, Any]) -> list[str]:
    glue, database = target.client("glue"), dict(props["DatabaseInput"])
    try:
        glue.create_database(CatalogId=props["CatalogId"], DatabaseInput=database)
    except glue.exceptions.AlreadyExistsException:
        glue.update_database(
            CatalogId=props["CatalogId"], Name=database["Name"], DatabaseInput=database
        )
    return [f"Glue database {database['Name']}"]


def _glue_table(target: Target, props: dict[str, Any]) -> list[str]:
    """Create or replace the table (an update replaces its whole input, as on AWS)."""
    glue, table = target.client("glue"), dict(props["TableInput"])
    where = {"CatalogId": props["CatalogId"], "DatabaseName": props["DatabaseName"]}
    try:
        glue.create_table(**where, TableInput=table)
    except glue.exceptions.AlreadyExistsException:
        glue.update_table(**where, TableInput=table)
    return [f"Glue table {props['DatabaseName']}.{table['Name']}"]


_APPLY: dict[str, Callable[[Target, dict[str, Any]], list[str]]] = {
    "AWS::S3::BucketPolicy": _bucket_policy,
    "AWS::SQS::QueuePolicy": _queue_policy,
    "AWS::SNS::TopicPolicy": _topic_policy,
    "AWS::SNS::Subscription": _subscription,
    "AWS::CloudWatch::Alarm": _alarm,
    "AWS::S3::Bucket": _bucket,
    "AWS::DynamoDB::Table": _table,
    "AWS::Glue::Database": _glue_database,
    "AWS::Glue::Table": _glue_table,
}
