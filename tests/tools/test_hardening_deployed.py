"""The hardened templates deployed to moto's server by `sluice deploy` (the session's stage):
the ops topic exists with its own key, every alarm notifies it, the landing bucket logs its
access. The templates themselves are held by tests/infra/test_hardening.py."""

from __future__ import annotations

from support.deployed import Deployed


def test_a_deploy_to_moto_makes_the_ops_topic_every_alarm_notifies(deployed: Deployed) -> None:
    sns, cloudwatch, s3 = (deployed.client(s) for s in ("sns", "cloudwatch", "s3"))
    topic = f"arn:aws:sns:{deployed.target.region}:{deployed.target.account}:sluice-test-ops"
    attributes = sns.get_topic_attributes(TopicArn=topic)["Attributes"]
    # The topic's key is the stage's own (moto's DescribeKey fails on a key CloudFormation
    # made: it keeps the key policy as an object, so the alias and rotation are read).
    kms = deployed.client("kms")
    aliases = {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases()["Aliases"]}
    key_id = attributes["KmsMasterKeyId"].rsplit("/", 1)[-1]
    assert aliases["alias/sluice-test-ops"] == key_id
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is True

    alarms = cloudwatch.describe_alarms(AlarmNamePrefix="sluice-test-")["MetricAlarms"]
    assert len(alarms) >= 10
    assert {a["AlarmName"]: a["AlarmActions"] for a in alarms} == {
        a["AlarmName"]: [topic] for a in alarms
    }
    logging = s3.get_bucket_logging(Bucket="sluice-test-landing")["LoggingEnabled"]
    assert logging == {"TargetBucket": "sluice-test-access-logs", "TargetPrefix": "landing/"}
    for name in ("sluice-test-quarantine", "sluice-test-payloads"):
        assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    # moto ignores aws:SecureTransport (it would deny its own plain-HTTP clients): the TLS
    # Deny is left out there, the topic's send right stays.
    sqs = deployed.client("sqs")
    url = sqs.get_queue_url(QueueName="sluice-test-consumer-index")["QueueUrl"]
    policy = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]
    assert '"Deny"' not in policy["Policy"]
    assert "sns.amazonaws.com" in policy["Policy"]
