"""Faults at the API layer: the emulator answers a function's AWS call as a failing AWS would.

A WSGI middleware around moto's application (`middleware`, installed by `Emulator.start`).
Unlike the worker's pre-handler hook (`faults.py`), the function runs for real and sees real
error responses, in the wire format of each protocol, in the middle of its work:

- `throttle`: the service's own throttling error (DynamoDB `ProvisionedThroughputExceeded
  Exception` 400, SQS `RequestThrottled` 400, SNS `Throttling` 400, S3 `SlowDown` 503), which
  botocore's standard retry mode retries as throttling; moto is not called.
- `error_before`: a 500 internal error; moto is not called (nothing happened).
- `error_after`: moto is called (the write happens), its answer is discarded and a 500 goes
  back: the lost response. The SDK's retry then meets its own earlier write.
- `kill_after`: moto is called, then the calling worker process is SIGKILLed before it gets
  the answer: the function dies in the middle of real work (after a send, before its ledger
  write; after a claim, before its sink write).

Who is calling. Only requests made by function workers are ever faulted, never the runtime's
own pollers, deploy, ledger or test clients. A worker says who it is in every request: at
startup, before the function is imported, it sets `AWS_SDK_UA_APP_ID` to `sluice-fn.<pid>`
(`worker.app_id`), and botocore puts `app/<that>` in the User-Agent of every client the
function makes. Nothing else sets that prefix. The pid names the process `kill_after` kills
(only ever a child of this process) and, through the pool's registry of the workers it
started (`pool.function_of`), the function rules match. A function that set its own
`user_agent_appid` in code would escape the faults (none does); a client that is not botocore
(none is used) likewise.

Which calls. A plan (`ApiFaultPlan`) holds rules: service (`dynamodb`, `sqs`, `sns`, `s3`,
`events`, or `*`), operations (X-Amz-Target's operation, the query `Action`, or the S3
operation named from method, path and query: `PutObject`, `GetObject`, ...), a function
(full name or its end), a probability drawn from the plan's seeded `random.Random`, and at
most `times` fires. The first rule that matches and draws decides. Decisions are taken under
one lock, so a seeded plan fed the same calls in the same order fires the same way. `stop()`
turns every rule off (the "once the faults stop" of a test); `fired` counts what fired by
kind, service and operation.

The plan in force is the process's (`use`): moto's state is per process, so is its emulator.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import signal
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from sluice_tools.local.pool import function_of
from sluice_tools.local.worker import APP_ID_PREFIX

log = logging.getLogger("sluice.local")

KINDS = ("throttle", "error_before", "error_after", "kill_after")
SERVICES = ("dynamodb", "sqs", "sns", "s3", "events")
API_FAULTS_ENV = "SLUICE_API_FAULTS"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_CALLER = re.compile(r"\bapp/" + re.escape(APP_ID_PREFIX) + r"(\d+)\b")
_SCOPE = re.compile(r"Credential=[^/,]+/[^/]+/[^/]+/([^/]+)/aws4_request")


@dataclass(frozen=True)
class Call:
    """One AWS request, as far as fault rules care: who made it and what it is."""

    service: str
    operation: str
    pid: int
    function: str


@dataclass
class ApiFaultRule:
    """Fire `kind` on matching calls, with probability `rate`, at most `times` times."""

    kind: str
    service: str = "*"
    operations: tuple[str, ...] = ()  # empty: every operation of the service
    function: str | None = None  # a function's full name or its end; None: any function
    rate: float = 1.0
    times: int | None = None
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"API fault kind {self.kind!r} is not one of {list(KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"API fault rate {self.rate!r} is not a probability")
        self.operations = tuple(self.operations)

    def matches(self, call: Call) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.service not in ("*", call.service):
            return False
        if self.operations and call.operation not in self.operations:
            return False
        if self.function is None:
            return True
        return call.function == self.function or call.function.endswith(self.function)


class ApiFaultPlan:
    """The API faults in force: rules, a seeded random source, an on/off switch, counts."""

    def __init__(self, rules: Iterable[ApiFaultRule] = (), seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self.rules = list(rules)
        self.seed = seed
        self._random = random.Random(seed)
        self.active = True
        self.fired: Counter[tuple[str, str, str]] = Counter()  # (kind, service, operation)
        self.fired_in: Counter[str] = Counter()  # function → faults fired in its calls
        self.seen = 0  # worker calls the plan was asked about while active

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiFaultPlan:
        """`SLUICE_API_FAULTS`: JSON, a list of rules or `{"seed": N, "rules": [...]}`."""
        raw = ((os.environ if env is None else env).get(API_FAULTS_ENV) or "").strip()
        return parse(raw) if raw else cls()

    def add(self, rule: ApiFaultRule) -> ApiFaultRule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def start(self) -> None:
        with self._lock:
            self.active = True

    def stop(self) -> None:
        """No fault fires from now on (until `start`)."""
        with self._lock:
            self.active = False

    @property
    def enabled(self) -> bool:
        return self.active and bool(self.rules)

    def decide(self, call: Call) -> str | None:
        """The kind of fault to inject into `call`, or None; counted when one fires."""
        with self._lock:
            if not self.active:
                return None
            self.seen += 1
            for rule in self.rules:
                if not rule.matches(call):
                    continue
                if rule.rate < 1.0 and self._random.random() >= rule.rate:
                    continue
                rule.fired += 1
                self.fired[(rule.kind, call.service, call.operation)] += 1
                self.fired_in[call.function] += 1
                return rule.kind
        return None

    def counts(self) -> dict[str, int]:
        """Faults fired per kind."""
        with self._lock:
            out: Counter[str] = Counter()
            for (kind, _service, _operation), n in self.fired.items():
                out[kind] += n
            return dict(out)

    def summary(self) -> list[str]:
        """One line per kind: the total, then per service and operation."""
        with self._lock:
            fired = dict(self.fired)
        lines = []
        for kind in KINDS:
            mine = sorted(
                ((s, o, n) for (k, s, o), n in fired.items() if k == kind),
                key=lambda t: (-t[2], t[0], t[1]),
            )
            if mine:
                total = sum(n for *_, n in mine)
                detail = ", ".join(f"{s}:{o} {n}" for s, o, n in mine)
                lines.append(f"{kind} {total} ({detail})")
        return lines


def parse(raw: str) -> ApiFaultPlan:
    doc = json.loads(raw)
    seed = None
    if isinstance(doc, dict):
        seed = doc.get("seed")
        doc = doc.get("rules", [])
    rules = [
        ApiFaultRule(
            kind=str(item["kind"]),
            service=str(item.get("service", "*")),
            operations=tuple(item.get("operations") or ()),
            function=item.get("function"),
            rate=float(item.get("rate", 1.0)),
            times=None if item.get("times") is None else int(item["times"]),
        )
        for item in doc
    ]
    return ApiFaultPlan(rules, seed=None if seed is None else int(seed))


# --------------------------------------------------------------------- the plan in force

_plan: ApiFaultPlan | None = None


def use(plan: ApiFaultPlan | None) -> None:
    """Put `plan` in force for this process's emulator (None: no API faults)."""
    global _plan
    _plan = plan


def in_force() -> ApiFaultPlan | None:
    return _plan


# --------------------------------------------------------------------- the middleware


def middleware(app: WSGIApp) -> WSGIApp:
    """moto's WSGI application with the plan in force applied to function workers' calls."""

    def faulting(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        plan = _plan
        if plan is None or not plan.enabled:
            return app(environ, start_response)
        call = identify(environ)
        if call is None:
            return app(environ, start_response)
        kind = plan.decide(call)
        if kind is None:
            return app(environ, start_response)
        return _inject(kind, call, app, environ, start_response)

    return faulting


def identify(environ: Mapping[str, Any]) -> Call | None:
    """The call a request makes, if a function worker makes it; None for anyone else."""
    caller = _CALLER.search(str(environ.get("HTTP_USER_AGENT") or ""))
    if caller is None:
        return None
    scope = _SCOPE.search(str(environ.get("HTTP_AUTHORIZATION") or ""))
    service = scope.group(1) if scope else "unknown"
    pid = int(caller.group(1))
    return Call(
        service=service,
        operation=operation_of(service, environ),
        pid=pid,
        function=function_of(pid) or "",
    )


def operation_of(service: str, environ: Mapping[str, Any]) -> str:
    """The API operation a request calls (JSON target, query Action, or S3's REST form)."""
    from sluice_tools.local.iam import operation

    return operation(service, environ)


def s3_operation(environ: Mapping[str, Any]) -> str:
    """S3's operation from method, path-style path and query (the operations Sluice uses)."""
    method = str(environ.get("REQUEST_METHOD") or "GET")
    path = str(environ.get("PATH_INFO") or "/").lstrip("/")
    query = parse_qs(str(environ.get("QUERY_STRING") or ""), keep_blank_values=True)
    bucket, _, key = path.partition("/")
    if not bucket:
        return "ListBuckets"
    if not key:
        if method == "GET":
            if "notification" in query:
                return "GetBucketNotificationConfiguration"
            if "versions" in query:
                return "ListObjectVersions"
            return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
        if method == "POST" and "delete" in query:
            return "DeleteObjects"
        return {"HEAD": "HeadBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}.get(
            method, f"{method}Bucket"
        )
    if "uploadId" in query:
        return {
            "PUT": "UploadPart",
            "POST": "CompleteMultipartUpload",
            "DELETE": "AbortMultipartUpload",
            "GET": "ListParts",
        }.get(method, f"{method}Upload")
    if "tagging" in query:
        return {"PUT": "PutObjectTagging", "GET": "GetObjectTagging"}.get(
            method, "DeleteObjectTagging"
        )
    if method == "PUT":
        return "CopyObject" if environ.get("HTTP_X_AMZ_COPY_SOURCE") else "PutObject"
    if method == "POST" and "uploads" in query:
        return "CreateMultipartUpload"
    return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(
        method, f"{method}Object"
    )


def _inject(
    kind: str,
    call: Call,
    app: WSGIApp,
    environ: dict[str, Any],
    start_response: Callable[..., Any],
) -> Iterable[bytes]:
    if kind in ("error_after", "kill_after"):
        status = _call_and_discard(app, environ)
        log.info("API fault %s: %s %s done by moto (%s), answer lost", kind, *_what(call), status)
        if kind == "kill_after" and _our_child(call.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(call.pid, signal.SIGKILL)
    status_line, headers, body = (
        throttle_response(call) if kind == "throttle" else internal_error_response(call)
    )
    start_response(status_line, headers)
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


def _our_child(pid: int) -> bool:
    """Whether `pid` is a child of this process (a worker): nothing else is ever killed.

    Without /proc (not Linux) the pid's word is taken: it came from one of our workers.
    """
    if pid <= 1 or pid == os.getpid():
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
    except FileNotFoundError:
        return not os.path.isdir("/proc")
    except OSError:
        return False
    return len(fields) > 1 and int(fields[1]) == os.getpid()


def _what(call: Call) -> tuple[str, str]:
    return (call.function, f"{call.service}:{call.operation}")


def _call_and_discard(app: WSGIApp, environ: dict[str, Any]) -> str:
    """Let moto do the request; what it answers is thrown away (its status returned)."""
    seen: list[str] = []

    def start_response(status: str, _headers: Any, _exc_info: Any = None) -> Callable[..., Any]:
        seen[:] = [status]
        return lambda _data: None

    result = app(environ, start_response)
    try:
        for _chunk in result:
            pass
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return seen[0] if seen else "no status"


# --------------------------------------------------------------------- error responses

Response = tuple[str, list[tuple[str, str]], bytes]
_STATUS = {400: "400 Bad Request", 500: "500 Internal Server Error", 503: "503 Slow Down"}


def throttle_response(call: Call) -> Response:
    """The service's own throttling answer (an error code botocore retries as throttling)."""
    if call.service == "dynamodb":
        code = (
            "ProvisionedThroughputExceededException"
            if call.operation.endswith(("Item", "Items")) or call.operation in ("Query", "Scan")
            else "ThrottlingException"
        )
        return _dynamodb_error(
            400,
            code,
            "The level of configured provisioned throughput for "
            "the table was exceeded. Consider increasing your provisioning "
            "level with the UpdateTable API.",
        )
    if call.service == "sqs":
        return _sqs_error(400, "RequestThrottled", "Sender", "Rate exceeded")
    if call.service == "s3":
        return _s3_error(503, "SlowDown", "Please reduce your request rate.")
    if call.service == "sns":
        return _query_error(400, "Throttling", "Sender", "Rate exceeded", "sns")
    return _json_error(400, "ThrottlingException", "Rate exceeded")


def internal_error_response(call: Call) -> Response:
    """An internal server error (500) in the service's wire format."""
    if call.service == "dynamodb":
        return _dynamodb_error(500, "InternalServerError", "Internal server error")
    if call.service == "sqs":
        return _sqs_error(500, "InternalFailure", "Receiver", "Internal failure")
    if call.service == "s3":
        return _s3_error(
            500, "InternalError", "We encountered an internal error. Please try again."
        )
    if call.service == "sns":
        return _query_error(500, "InternalError", "Receiver", "Internal error", "sns")
    return _json_error(500, "InternalFailure", "Internal failure")


def _request_id() -> str:
    return str(uuid.uuid4())


def _dynamodb_error(status: int, code: str, message: str) -> Response:
    body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message})
    headers = [
        ("Content-Type", "application/x-amz-json-1.0"),
        ("x-amzn-RequestId", _request_id()),
    ]
    return _STATUS[status], headers, body.encode()


def _sqs_error(status: int, code: str, fault: str, message: str) -> Response:
    """SQS speaks JSON 1.0 to botocore here, query-compatible: the code is also in a header."""
    body = json.dumps({"__type": f"com.amazonaws.sqs#{code}", "message": message})
    headers = [
        ("Content-Type", "application/x-amz-json-1.0"),
        ("x-amzn-RequestId", _request_id()),
        ("x-amzn-query-error", f"{code};{fault}"),
    ]
    return _STATUS[status], headers, body.encode()


def _json_error(status: int, code: str, message: str) -> Response:
    body = json.dumps({"__type": code, "message": message})
    headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", _request_id())]
    return _STATUS[status], headers, body.encode()


def _query_error(status: int, code: str, fault: str, message: str, service: str) -> Response:
    namespace = f"http://{service}.amazonaws.com/doc/2010-03-31/"
    body = (
        f'<ErrorResponse xmlns="{namespace}"><Error><Type>{fault}</Type><Code>{code}</Code>'
        f"<Message>{message}</Message></Error><RequestId>{_request_id()}</RequestId>"
        "</ErrorResponse>"
    )
    return _STATUS[status], [("Content-Type", "text/xml")], body.encode()


def _s3_error(status: int, code: str, message: str) -> Response:
    from sluice_tools.local.iam import s3_error

    return s3_error(code, message, _STATUS[status])
