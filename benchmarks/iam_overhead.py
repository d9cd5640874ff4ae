"""What enforcing IAM at the emulator costs per request (`python -m benchmarks.iam_overhead`).

One emulator; a role allowed PutItem on one table; the same PutItem loop three ways: the
operator's key with enforcement off (moto as before), the operator's key with it on (the
key look-up only), and the role's session with it on (key, token and signature checks,
the policy decision). Prints milliseconds per call, client included; the differences are
what enforcement adds.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from sluice_tools.local import iam
from sluice_tools.local.emulator import Emulator, client

POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "dynamodb:PutItem", "Resource": "arn:aws:dynamodb:*:*:*"}
    ],
}
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def _per_call_ms(ddb: Any, calls: int) -> float:
    started = time.perf_counter()
    for n in range(calls):
        ddb.put_item(TableName="bench", Item={"pk": {"S": f"k{n % 100}"}, "v": {"N": str(n)}})
    return (time.perf_counter() - started) * 1000 / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    calls = parser.parse_args().calls
    emulator = Emulator()
    endpoint = emulator.start()
    try:
        operator = client("dynamodb", endpoint)
        operator.create_table(
            TableName="bench",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        iam_client = client("iam", endpoint)
        role = iam_client.create_role(RoleName="bench", AssumeRolePolicyDocument=json.dumps(TRUST))
        iam_client.put_role_policy(
            RoleName="bench", PolicyName="bench", PolicyDocument=json.dumps(POLICY)
        )
        answer = client("sts", endpoint).assume_role(
            RoleArn=role["Role"]["Arn"], RoleSessionName="bench"
        )["Credentials"]
        session = {
            "AWS_ACCESS_KEY_ID": answer["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": answer["SecretAccessKey"],
            "AWS_SESSION_TOKEN": answer["SessionToken"],
        }
        as_role = client("dynamodb", endpoint, credentials=session)
        _per_call_ms(operator, 200)  # warm both connections and moto's paths
        iam.enforce(False)
        off = _per_call_ms(operator, calls)
        iam.enforce(True)
        _per_call_ms(as_role, 200)
        operator_on = _per_call_ms(operator, calls)
        role_on = _per_call_ms(as_role, calls)
    finally:
        iam.enforce(False)
        emulator.stop()
    print(f"PutItem x {calls}, ms per call (client, HTTP and moto included):")
    print(f"  enforcement off, operator          {off:.3f}")
    print(f"  enforcement on,  operator          {operator_on:.3f}  ({operator_on - off:+.3f})")
    print(f"  enforcement on,  function's role   {role_on:.3f}  ({role_on - off:+.3f})")


if __name__ == "__main__":
    main()
