"""EventBridge's deliveries to Lambda and SNS targets, in the local runtime.

moto matches a PutEvents event against each rule of the bus and delivers it to queue,
log-group and bus targets itself; for Lambda and SNS targets (which moto refuses) its patched
`send_to_targets` (`motocompat.server`) hands the event to `TargetRouter`. A Lambda target's
event is queued on the runtime's internal queue of that function (kind `events`), if the
function's resource policy lets EventBridge invoke it for the rule: an async poller invokes
the function from there as Lambda invokes an EventBridge target, retries then on-failure
destination included. An SNS target's event is published to its topic. An event that cannot
be delivered goes to the target's dead-letter queue, if it has one (EventBridge would first
retry for up to a day: not here).

Pure shaping (`aws_event`, `target_input`) is apart from the two deliveries, to test alone.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("sluice.local")
KIND = "events"  # the internal queues' kind: <function>-rt-events
EVENTS_PRINCIPAL = "events.amazonaws.com"
EVENT_KEYS = ("version", "id", "detail-type", "source", "account", "time", "region")


def aws_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event as EventBridge hands it to a target: ISO time, no moto-only keys."""
    shaped: dict[str, Any] = {key: event.get(key) for key in EVENT_KEYS}
    shaped["version"] = str(event.get("version") or "0")
    shaped["time"] = iso_time(event.get("time"))
    shaped["resources"] = list(event.get("resources") or [])
    shaped["detail"] = event.get("detail") if event.get("detail") is not None else {}
    return shaped


def iso_time(value: Any) -> str:
    """moto keeps an event's time as epoch seconds; EventBridge sends `2026-12-04T23:59:01Z`."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if value:
        return str(value)
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def target_input(event: Mapping[str, Any], target: Mapping[str, Any]) -> Any:
    """What `target` receives for `event`: its constant `Input`, the part its `InputPath`
    selects, its `InputTransformer`'s output (moto's template parser, as for queue targets),
    or else the whole event."""
    shaped = aws_event(event)
    if target.get("Input") is not None:
        return json.loads(target["Input"])
    if target.get("InputPath"):
        from jsonpath_ng.ext.parser import parse

        found = parse(target["InputPath"]).find(shaped)
        return found[0].value if found else None
    transformer = target.get("InputTransformer")
    if transformer:
        from moto.events.utils import EventTemplateParser

        with_ingestion = {**shaped, "ingestion-time": event.get("ingestion-time", 0)}
        return EventTemplateParser.parse(
            input_template=transformer.get("InputTemplate"),
            input_paths_map=transformer.get("InputPathsMap") or {},
            event=with_ingestion,  # type: ignore[arg-type]
        )
    return shaped


class InvokeRefused(Exception):
    """The function's resource policy does not let EventBridge invoke it for the rule."""


def may_invoke(statements: list[dict[str, Any]], rule_arn: str) -> bool:
    """Whether a function's resource policy lets EventBridge invoke it for the rule `rule_arn`
    (an Allow for events.amazonaws.com, `lambda:InvokeFunction`, a source ARN that matches)."""
    for statement in statements:
        principal = statement.get("Principal")
        services = principal.get("Service") if isinstance(principal, dict) else principal
        actions = _listed(statement.get("Action"))
        if statement.get("Effect", "Allow") != "Allow":
            continue
        if EVENTS_PRINCIPAL not in _listed(services) and "*" not in _listed(services):
            continue
        if not {"lambda:InvokeFunction", "lambda:*", "*"} & set(actions):
            continue
        conditions = {
            key.lower(): value
            for operator in (statement.get("Condition") or {}).values()
            for key, value in operator.items()
        }
        sources = _listed(conditions.get("aws:sourcearn", "*"))
        if any(fnmatch.fnmatchcase(rule_arn, str(source)) for source in sources):
            return True
    return False


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def body_of(payload: Any) -> str:
    """A target input as the text a queue or topic carries (a string stays as it is)."""
    return payload if isinstance(payload, str) else json.dumps(payload)


class TargetRouter:
    """The handler `motocompat.server.route_event_targets` calls for Lambda and SNS targets.

    Runs inside moto's PutEvents (in the emulator's process), so it talks to moto's backends
    directly, as moto's own queue targets do.
    """

    def __init__(self, queue_name: Callable[[str], str]) -> None:
        self.queue_name = queue_name  # function name → its internal `events` queue
        self.delivered = 0
        self.dropped = 0

    def __call__(self, rule: Any, target: dict[str, Any], event: dict[str, Any]) -> None:
        arn = str(target["Arn"])
        payload = target_input(event, target)
        try:
            if arn.split(":")[2] == "lambda":
                self._to_function(rule, arn, payload)
            else:
                self._to_topic(rule, arn, payload)
        except Exception as exc:  # EventBridge retries (not here), then the target's DLQ
            self.dropped += 1
            dead_letters = (target.get("DeadLetterConfig") or {}).get("Arn")
            log.warning(
                "rule %s: event %s not delivered to %s (%s: %s)%s",
                rule.name,
                event.get("id"),
                arn,
                type(exc).__name__,
                exc,
                f"; sent to {dead_letters}" if dead_letters else "",
            )
            if dead_letters:
                self._to_dead_letters(rule, arn, str(dead_letters), payload, exc)
            return
        self.delivered += 1

    def _to_function(self, rule: Any, arn: str, payload: Any) -> None:
        from moto.awslambda.models import lambda_backends
        from moto.sqs.models import sqs_backends

        from sluice_tools.local.topology import function_name_of

        function = function_name_of(arn)
        lam = lambda_backends[rule.account_id][rule.region_name]
        try:
            policy = json.loads(json.loads(lam.get_policy(function))["Policy"])
        except Exception:  # no function, or no resource policy at all
            policy = {}
        if not may_invoke(policy.get("Statement") or [], rule.arn):
            raise InvokeRefused(
                f"{function}'s resource policy does not let events.amazonaws.com invoke it "
                f"for {rule.arn} (lambda add-permission)"
            )
        backend = sqs_backends[rule.account_id][rule.region_name]
        backend.send_message(queue_name=self.queue_name(function), message_body=body_of(payload))

    def _to_dead_letters(
        self, rule: Any, arn: str, queue_arn: str, payload: Any, error: Exception
    ) -> None:
        """What EventBridge puts in a target's dead-letter queue: the event, and why."""
        from moto.sqs.models import sqs_backends

        parts = queue_arn.split(":")
        reasons = {
            "RULE_ARN": rule.arn,
            "TARGET_ARN": arn,
            "ERROR_CODE": type(error).__name__,
            "ERROR_MESSAGE": str(error)[:256],
        }
        try:
            sqs_backends[parts[4]][parts[3]].send_message(
                queue_name=parts[5],
                message_body=body_of(payload),
                message_attributes={
                    k: {"DataType": "String", "StringValue": v} for k, v in reasons.items()
                },
            )
        except Exception as exc:
            log.warning(
                "rule %s: dead-letter queue %s refused the event: %s", rule.name, queue_arn, exc
            )

    def _to_topic(self, rule: Any, arn: str, payload: Any) -> None:
        from moto.sns.models import sns_backends

        parts = arn.split(":")
        backend = sns_backends[parts[4]][parts[3]]
        backend.publish(message=body_of(payload), arn=arn)
