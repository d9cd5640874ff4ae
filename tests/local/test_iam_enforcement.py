"""The emulator enforces IAM: a role's credentials get what its policies grant, on the resource.

Unit tests against one started emulator (`iam.enforce` on, as the runtime turns it on after its
deploy), then one runtime test with toy functions: each worker calls with its own role's
credentials, and a grant taken away makes its function fail with AccessDenied, the message
ending in the DLQ.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from support.waiting import wait_until

from sluice_tools.local import apifaults, iam
from sluice_tools.local.apifaults import ApiFaultPlan, ApiFaultRule
from sluice_tools.local.emulator import ACCOUNT_ID, Emulator, client
from sluice_tools.local.pool import register_worker
from sluice_tools.local.runtime import LocalRuntime, Options
from sluice_tools.local.worker import app_id

from .conftest import depth, queue

REGION = "us-east-1"
TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action: str | list[str], resource: str | list[str]) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource}


GRANTS = policy(
    allow("sqs:SendMessage", "arn:aws:sqs:*:*:granted-queue"),
    allow(["dynamodb:PutItem", "dynamodb:UpdateItem"], "arn:aws:dynamodb:*:*:table/granted"),
    allow("dynamodb:Query", "arn:aws:dynamodb:*:*:table/granted/index/by-kind"),
    allow("sns:Publish", "arn:aws:sns:*:*:granted-topic"),
    allow("s3:GetObject", "arn:aws:s3:::iam-bucket/granted/*"),
    allow("ssm:GetParameter", "arn:aws:ssm:*:*:parameter/granted/token"),
    allow("s3:*", "arn:aws:s3:::iam-bucket/*"),
    {"Effect": "Deny", "Action": "s3:*", "Resource": "arn:aws:s3:::iam-bucket/secret/*"},
)


class World:
    """The emulator, its resources (made by the operator) and one function role's clients."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.operator = {s: client(s, endpoint) for s in ("sqs", "dynamodb", "sns", "s3", "ssm")}
        self.urls: dict[str, str] = {}
        self.topics: dict[str, str] = {}
        self.credentials: dict[str, str] = {}

    def role(self, service: str, credentials: dict[str, str] | None = None) -> Any:
        return client(service, self.endpoint, credentials=credentials or self.credentials)


def table(ddb: Any, name: str) -> None:
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "kind", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-kind",
                "KeySchema": [{"AttributeName": "kind", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": "other",
                "KeySchema": [{"AttributeName": "kind", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            },
        ],
        BillingMode="PAY_PER_REQUEST",
    )


@pytest.fixture(scope="module")
def world(aws_env: None) -> Iterator[World]:
    emulator = Emulator()
    world = World(emulator.start())
    op = world.operator
    for name in ("granted-queue", "other-queue"):
        world.urls[name] = op["sqs"].create_queue(QueueName=name)["QueueUrl"]
    for name in ("granted", "other"):
        table(op["dynamodb"], name)
    for name in ("granted-topic", "other-topic"):
        world.topics[name] = op["sns"].create_topic(Name=name)["TopicArn"]
    op["s3"].create_bucket(Bucket="iam-bucket")
    for key in ("granted/a.json", "other/a.json", "secret/a.json"):
        op["s3"].put_object(Bucket="iam-bucket", Key=key, Body=b"{}")
    for name in ("/granted/token", "/other/token"):
        op["ssm"].put_parameter(Name=name, Value="v", Type="SecureString")
    roles = client("iam", world.endpoint)
    roles.create_role(RoleName="fn-role", AssumeRolePolicyDocument=TRUST)
    roles.put_role_policy(RoleName="fn-role", PolicyName="grants", PolicyDocument=GRANTS)
    answer = client("sts", world.endpoint).assume_role(
        RoleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/fn-role", RoleSessionName="fn-session"
    )["Credentials"]
    world.credentials = {
        "AWS_ACCESS_KEY_ID": answer["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": answer["SecretAccessKey"],
        "AWS_SESSION_TOKEN": answer["SessionToken"],
    }
    iam.enforce(True)
    try:
        yield world
    finally:
        iam.enforce(False)
        emulator.stop()


PRINCIPAL = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/fn-role/fn-session"


def denied(call: Any, code: str = "AccessDenied") -> str:
    """The error message of a call that must be refused with `code` (403, not retried)."""
    with pytest.raises(ClientError) as raised:
        call()
    response = raised.value.response
    assert response["Error"]["Code"] == code, response["Error"]
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert response["ResponseMetadata"].get("RetryAttempts", 0) == 0  # not taken for throttling
    return str(response["Error"].get("Message"))


def refusal(action: str, resource: str) -> str:
    return (
        f"User: {PRINCIPAL} is not authorized to perform: {action} on resource: {resource} "
        f"because no identity-based policy allows the {action} action"
    )


def test_a_queue_the_role_is_granted_takes_messages_another_is_refused(world: World) -> None:
    sqs = world.role("sqs")
    sqs.send_message(QueueUrl=world.urls["granted-queue"], MessageBody="ok")

    message = denied(lambda: sqs.send_message(QueueUrl=world.urls["other-queue"], MessageBody="x"))
    batch = denied(
        lambda: sqs.send_message_batch(
            QueueUrl=world.urls["other-queue"], Entries=[{"Id": "1", "MessageBody": "x"}]
        )
    )

    resource = f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:other-queue"
    assert message == batch == refusal("sqs:SendMessage", resource)
    assert depth(world.operator["sqs"], world.urls["other-queue"]) == 0


def test_a_dynamodb_write_is_checked_against_its_table_not_star(world: World) -> None:
    ddb = world.role("dynamodb")
    ddb.put_item(TableName="granted", Item={"pk": {"S": "p1"}, "kind": {"S": "k"}})

    message = denied(
        lambda: ddb.put_item(TableName="other", Item={"pk": {"S": "p1"}}),
        code="AccessDeniedException",
    )

    table_arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/other"
    assert message == refusal("dynamodb:PutItem", table_arn)
    assert "Item" not in world.operator["dynamodb"].get_item(
        TableName="other", Key={"pk": {"S": "p1"}}
    )


def test_a_query_on_an_index_needs_the_index_grant(world: World) -> None:
    ddb = world.role("dynamodb")
    query = {
        "TableName": "granted",
        "KeyConditionExpression": "kind = :k",
        "ExpressionAttributeValues": {":k": {"S": "k"}},
    }
    ddb.query(IndexName="by-kind", **query)

    message = denied(lambda: ddb.query(IndexName="other", **query), "AccessDeniedException")
    base = denied(lambda: ddb.query(**query), "AccessDeniedException")

    table_arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/granted"
    assert message == refusal("dynamodb:Query", f"{table_arn}/index/other")
    assert base == refusal("dynamodb:Query", table_arn)


def test_a_transaction_needs_each_items_action_on_each_items_table(world: World) -> None:
    ddb = world.role("dynamodb")
    ours = {"Put": {"TableName": "granted", "Item": {"pk": {"S": "t1"}}}}
    theirs = {"Put": {"TableName": "other", "Item": {"pk": {"S": "t1"}}}}
    ddb.transact_write_items(TransactItems=[ours])

    message = denied(
        lambda: ddb.transact_write_items(
            TransactItems=[{"Put": {**ours["Put"], "Item": {"pk": {"S": "t2"}}}}, theirs]
        ),
        "AccessDeniedException",
    )
    delete = denied(
        lambda: ddb.transact_write_items(
            TransactItems=[{"Delete": {"TableName": "granted", "Key": {"pk": {"S": "t1"}}}}]
        ),
        "AccessDeniedException",
    )

    other_arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/other"
    assert message == refusal("dynamodb:PutItem", other_arn)
    assert delete == refusal("dynamodb:DeleteItem", other_arn.replace("other", "granted"))
    op = world.operator["dynamodb"]
    assert "Item" not in op.get_item(TableName="granted", Key={"pk": {"S": "t2"}})
    assert "Item" in op.get_item(TableName="granted", Key={"pk": {"S": "t1"}})


def test_sns_publishes_only_to_the_granted_topic_in_its_own_words(world: World) -> None:
    sns = world.role("sns")
    sns.publish(TopicArn=world.topics["granted-topic"], Message="ok")

    message = denied(
        lambda: sns.publish(TopicArn=world.topics["other-topic"], Message="x"),
        "AuthorizationError",
    )
    batch = denied(
        lambda: sns.publish_batch(
            TopicArn=world.topics["other-topic"],
            PublishBatchRequestEntries=[{"Id": "1", "Message": "x"}],
        ),
        "AuthorizationError",
    )

    topic = world.topics["other-topic"]
    assert message == batch == refusal("SNS:Publish", topic)


def test_s3_reads_only_under_the_granted_prefix_and_a_deny_wins(world: World) -> None:
    s3 = world.role("s3")
    assert s3.get_object(Bucket="iam-bucket", Key="granted/a.json")["Body"].read() == b"{}"
    s3.head_object(Bucket="iam-bucket", Key="granted/a.json")
    s3.put_object(Bucket="iam-bucket", Key="other/b.json", Body=b"{}")  # s3:* on the bucket

    secret = denied(lambda: s3.get_object(Bucket="iam-bucket", Key="secret/a.json"))
    listing = denied(lambda: s3.list_objects_v2(Bucket="iam-bucket"))

    assert secret == (
        f"User: {PRINCIPAL} is not authorized to perform: s3:GetObject on resource: "
        '"arn:aws:s3:::iam-bucket/secret/a.json" with an explicit deny in an identity-based '
        "policy"
    )
    assert listing.endswith("because no identity-based policy allows the s3:ListBucket action")


def test_a_missing_object_is_403_without_list_bucket_and_404_with_it(world: World) -> None:
    s3 = world.role("s3")

    message = denied(lambda: s3.get_object(Bucket="iam-bucket", Key="granted/missing.json"))
    with pytest.raises(ClientError) as head:
        s3.head_object(Bucket="iam-bucket", Key="granted/missing.json")

    assert message == refusal("s3:ListBucket", '"arn:aws:s3:::iam-bucket"')
    assert head.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    roles = client("iam", world.endpoint)
    listing = policy(allow("s3:ListBucket", "arn:aws:s3:::iam-bucket"))
    roles.put_role_policy(RoleName="fn-role", PolicyName="list", PolicyDocument=listing)
    try:
        with pytest.raises(ClientError) as missing:
            s3.get_object(Bucket="iam-bucket", Key="granted/missing.json")
        assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    finally:
        roles.delete_role_policy(RoleName="fn-role", PolicyName="list")


def test_a_refused_call_never_reaches_the_api_faults_an_allowed_one_does(world: World) -> None:
    pid = 4_000_000  # a worker's pid as the User-Agent names it (never a real child)
    register_worker(pid, "fn")
    config = Config(
        retries={"mode": "standard", "max_attempts": 3},
        user_agent_appid=app_id(pid),  # type: ignore[call-arg]  # botocore's stubs lag
    )
    creds = world.credentials
    worker = boto3.session.Session(
        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=creds["AWS_SESSION_TOKEN"],
        region_name=REGION,
    ).client("sqs", endpoint_url=world.endpoint, config=config)
    plan = ApiFaultPlan([ApiFaultRule("error_before", service="sqs", times=1)])
    apifaults.use(plan)
    try:
        denied(lambda: worker.send_message(QueueUrl=world.urls["other-queue"], MessageBody="x"))
        assert plan.seen == 0
        assert plan.counts() == {}

        worker.send_message(QueueUrl=world.urls["granted-queue"], MessageBody="retried")

        assert plan.counts() == {"error_before": 1}  # the first attempt failed, the retry not
    finally:
        apifaults.use(None)


def test_s3_outside_the_granted_bucket_is_refused(world: World) -> None:
    world.operator["s3"].create_bucket(Bucket="iam-other-bucket")
    world.operator["s3"].put_object(Bucket="iam-other-bucket", Key="granted/a.json", Body=b"")

    message = denied(
        lambda: world.role("s3").get_object(Bucket="iam-other-bucket", Key="granted/a.json")
    )

    assert message == (
        f"User: {PRINCIPAL} is not authorized to perform: s3:GetObject on resource: "
        '"arn:aws:s3:::iam-other-bucket/granted/a.json" because no identity-based policy '
        "allows the s3:GetObject action"
    )


def test_ssm_reads_only_the_granted_parameter(world: World) -> None:
    ssm = world.role("ssm")
    assert ssm.get_parameter(Name="/granted/token", WithDecryption=True)["Parameter"]["Value"]

    message = denied(
        lambda: ssm.get_parameter(Name="/other/token", WithDecryption=True),
        "AccessDeniedException",
    )

    resource = f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter/other/token"
    assert message == refusal("ssm:GetParameter", resource)


def test_a_request_signed_with_another_secret_is_refused(world: World) -> None:
    forged = {**world.credentials, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}

    denied(
        lambda: world.role("sqs", forged).send_message(
            QueueUrl=world.urls["granted-queue"], MessageBody="x"
        ),
        "SignatureDoesNotMatch",
    )
    denied(
        lambda: world.role("dynamodb", forged).put_item(
            TableName="granted", Item={"pk": {"S": "forged"}}
        ),
        "InvalidSignatureException",
    )
    denied(
        lambda: world.role("s3", forged).get_object(Bucket="iam-bucket", Key="granted/a.json"),
        "SignatureDoesNotMatch",
    )


def test_signatures_of_keys_that_need_encoding_match(world: World) -> None:
    key = "granted/a b+c=d é%.json"
    world.role("s3").put_object(Bucket="iam-bucket", Key=key, Body=b"odd")

    assert world.role("s3").get_object(Bucket="iam-bucket", Key=key)["Body"].read() == b"odd"
    listed = world.operator["s3"].list_objects_v2(Bucket="iam-bucket", Prefix="granted/a b")
    assert [o["Key"] for o in listed["Contents"]] == [key]


def test_get_caller_identity_names_the_assumed_role(world: World) -> None:
    identity = world.role("sts").get_caller_identity()

    assert identity["Arn"] == PRINCIPAL


def test_unknown_credentials_are_refused_and_the_operator_may_do_anything(world: World) -> None:
    stranger = {**world.credentials, "AWS_ACCESS_KEY_ID": "ASIAUNKNOWNKEY000000"}
    stolen_key = {**world.credentials, "AWS_SESSION_TOKEN": "not-the-session-token"}
    url = world.urls["granted-queue"]

    denied(
        lambda: world.role("sqs", stranger).send_message(QueueUrl=url, MessageBody="x"),
        "InvalidClientTokenId",
    )
    denied(
        lambda: world.role("sqs", stolen_key).send_message(QueueUrl=url, MessageBody="x"),
        "InvalidClientTokenId",
    )
    denied(lambda: world.role("dynamodb", stranger).list_tables(), "UnrecognizedClientException")
    denied(
        lambda: world.role("s3", stranger).get_object(Bucket="iam-bucket", Key="granted/a.json"),
        "InvalidAccessKeyId",
    )
    world.operator["sqs"].send_message(QueueUrl=world.urls["other-queue"], MessageBody="ops")
    world.operator["dynamodb"].put_item(TableName="other", Item={"pk": {"S": "ops"}})
    world.operator["s3"].get_object(Bucket="iam-bucket", Key="secret/a.json")


def test_a_changed_role_policy_applies_to_the_next_call(world: World) -> None:
    roles = client("iam", world.endpoint)
    sqs = world.role("sqs")
    url = world.urls["other-queue"]
    denied(lambda: sqs.send_message(QueueUrl=url, MessageBody="x"))
    extra = policy(allow("sqs:SendMessage", "arn:aws:sqs:*:*:other-queue"))
    roles.put_role_policy(RoleName="fn-role", PolicyName="extra", PolicyDocument=extra)
    try:
        sqs.send_message(QueueUrl=url, MessageBody="now granted")
        deny = {"Effect": "Deny", "Action": "sqs:Send*", "Resource": "*"}
        roles.put_role_policy(RoleName="fn-role", PolicyName="deny", PolicyDocument=policy(deny))
        message = denied(lambda: sqs.send_message(QueueUrl=url, MessageBody="x"))
        assert message.endswith("with an explicit deny in an identity-based policy")
    finally:
        roles.delete_role_policy(RoleName="fn-role", PolicyName="extra")
        roles.delete_role_policy(RoleName="fn-role", PolicyName="deny")
    denied(lambda: sqs.send_message(QueueUrl=url, MessageBody="x"))


def test_nothing_is_checked_while_enforcement_is_off(world: World) -> None:
    iam.enforce(False)
    try:
        world.role("sqs").send_message(QueueUrl=world.urls["other-queue"], MessageBody="x")
    finally:
        iam.enforce(True)


def test_required_names_the_action_and_resource_aws_checks() -> None:
    def body(doc: dict[str, Any]) -> dict[str, Any]:
        return {"wsgi.input": io.BytesIO(json.dumps(doc).encode())}

    writes = body({"RequestItems": {"a": [], "b": []}})
    assert iam.required("dynamodb", "BatchWriteItem", writes, "eu-west-1") == [
        ("dynamodb:BatchWriteItem", f"arn:aws:dynamodb:eu-west-1:{ACCOUNT_ID}:table/a"),
        ("dynamodb:BatchWriteItem", f"arn:aws:dynamodb:eu-west-1:{ACCOUNT_ID}:table/b"),
    ]
    multipart = {"PATH_INFO": "/b/k/x.gz", "QUERY_STRING": "uploadId=1&partNumber=2"}
    assert iam.required("s3", "UploadPart", {**multipart, "REQUEST_METHOD": "PUT"}, "x") == [
        ("s3:PutObject", "arn:aws:s3:::b/k/x.gz")
    ]
    names = body({"Names": ["/a/b", "c"]})
    assert iam.required("ssm", "GetParameters", names, "cn-north-1") == [
        ("ssm:GetParameters", f"arn:aws-cn:ssm:cn-north-1:{ACCOUNT_ID}:parameter/a/b"),
        ("ssm:GetParameters", f"arn:aws-cn:ssm:cn-north-1:{ACCOUNT_ID}:parameter/c"),
    ]
    events = body({"Entries": [{"Source": "s"}]})
    assert iam.required("events", "PutEvents", events, "us-east-1") == [
        ("events:PutEvents", f"arn:aws:events:us-east-1:{ACCOUNT_ID}:event-bus/default")
    ]
    assert iam.required("monitoring", "PutMetricData", body({}), "us-east-1") == [
        ("cloudwatch:PutMetricData", "*")
    ]


# --------------------------------------------------------------------- the runtime

TOY = """
import json, os
import boto3


def handler(event, context):
    arn = boto3.client("sts").get_caller_identity()["Arn"]
    boto3.client("sqs").send_message(
        QueueUrl=os.environ["ECHO_URL"],
        MessageBody=json.dumps({"function": context.function_name, "arn": arn}),
    )
    return {}
"""


def toy_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", TOY)
    return buffer.getvalue()


def toy_policy(name: str, echo: bool = True) -> str:
    statements = [
        allow(
            ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"],
            f"arn:aws:sqs:*:*:{name}-q",
        )
    ]
    if echo:
        statements.append(allow("sqs:SendMessage", "arn:aws:sqs:*:*:iam-toy-echo"))
    return policy(*statements)


@pytest.fixture(scope="module")
def runtime(aws_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRuntime]:
    options = Options(
        deploy=False,
        state_dir=tmp_path_factory.mktemp("iam-state"),
        console=False,
        visibility_timeout_s=1,
    )
    runtime = LocalRuntime(options)
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.stop()


def test_each_worker_calls_with_its_own_role_and_a_removed_grant_fails_to_the_dlq(
    runtime: LocalRuntime,
) -> None:
    sqs, lam, roles = runtime.client("sqs"), runtime.client("lambda"), runtime.client("iam")
    echo_url, _ = queue(sqs, "iam-toy-echo")
    names = ("iam-toy-a", "iam-toy-b")
    dlqs = {}
    for name in names:
        dlqs[name], dlq_arn = queue(sqs, f"{name}-dlq")
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
        _, arn = queue(sqs, f"{name}-q", RedrivePolicy=redrive)
        role = roles.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument=TRUST)
        roles.put_role_policy(
            RoleName=f"{name}-role", PolicyName="fn", PolicyDocument=toy_policy(name)
        )
        lam.create_function(
            FunctionName=name,
            Runtime="python3.11",
            Role=role["Role"]["Arn"],
            Handler="app.handler",
            Code={"ZipFile": toy_zip()},
            Timeout=20,
            Environment={"Variables": {"ECHO_URL": echo_url}},
        )
        lam.create_event_source_mapping(FunctionName=name, EventSourceArn=arn, BatchSize=1)
    iam.enforce(True)  # as `start` does after a deploy
    runtime.take_over()
    for name in names:
        sqs.send_message(
            QueueUrl=sqs.get_queue_url(QueueName=f"{name}-q")["QueueUrl"], MessageBody="go"
        )

    echoes: list[dict[str, Any]] = []

    def echoed() -> bool:
        page = sqs.receive_message(QueueUrl=echo_url, MaxNumberOfMessages=10).get("Messages")
        echoes.extend(json.loads(m["Body"]) for m in page or [])
        return len(echoes) >= 2

    wait_until(echoed, what="both toys echo their caller identity")
    assert {e["function"]: e["arn"] for e in echoes} == {
        name: f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{name}-role/{name}" for name in names
    }
    calls = iam.enforcer().calls
    for name in names:  # the mapping's poller receives with the function's role too
        assert (
            calls[
                (f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{name}-role/{name}", "sqs:ReceiveMessage")
            ]
            > 0
        )

    roles.put_role_policy(
        RoleName="iam-toy-a-role", PolicyName="fn", PolicyDocument=toy_policy("iam-toy-a", False)
    )
    sqs.send_message(
        QueueUrl=sqs.get_queue_url(QueueName="iam-toy-a-q")["QueueUrl"], MessageBody="again"
    )

    wait_until(lambda: depth(sqs, dlqs["iam-toy-a"]) == 1, what="the refused message in the DLQ")
    log = Path(runtime.options.state_dir, "logs", "iam-toy-a.log").read_text()
    assert "AccessDenied" in log
    assert (
        "is not authorized to perform: sqs:SendMessage on resource: "
        f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:iam-toy-echo" in log
    )
