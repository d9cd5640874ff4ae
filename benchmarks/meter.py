"""Counts AWS requests at the emulator: a WSGI wrapper around moto's in-process server.

Each request is recorded as (caller, service, operation, resource) with its billing units
(SQS and SNS: 64 KB units of the messages' bodies and attributes, as AWS bills them).
The caller is the `app/<id>` of the User-Agent (functions get `AWS_SDK_UA_APP_ID`), else
`runtime`. Bodies are read only for SQS, SNS and DynamoDB (small); S3 bodies are never read.
"""

from __future__ import annotations

import io
import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

_SERVICE = re.compile(r"Credential=[^/]+/\d+/[^/]+/([^/]+)/aws4_request")
_APP_ID = re.compile(r"(?:^|\s)app/(\S+)")
_BODY_SERVICES = {"sqs", "sns", "dynamodb", "sts", "events"}
DDB_WRITES = {"PutItem", "UpdateItem", "DeleteItem"}
DDB_READS = {"GetItem", "Query", "Scan"}


@dataclass
class Tally:
    """What one key (caller, service, operation, resource) cost."""

    requests: int = 0
    units: int = 0  # SQS/SNS: 64 KB billing units; DynamoDB: WRU + RRU; S3: requests
    wru: float = 0.0
    rru: float = 0.0
    empty: int = 0  # ReceiveMessage calls that returned no message
    emulator_cpu_ms: float = 0.0  # CPU time moto spent answering (its handler thread)

    def add(self, other: Tally) -> None:
        self.requests += other.requests
        self.units += other.units
        self.wru += other.wru
        self.rru += other.rru
        self.empty += other.empty
        self.emulator_cpu_ms += other.emulator_cpu_ms


@dataclass
class Meter:
    """Install once per process; `reset()` opens a window, `snapshot()` reads it."""

    unit_bytes: int = 65536
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _tallies: dict[tuple[str, str, str, str], Tally] = field(default_factory=dict)
    _original: Any = None

    def install(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication

        if self._original is not None:
            return
        original = DomainDispatcherApplication.__call__
        self._original = original
        meter = self

        def metered(app: Any, environ: dict[str, Any], start_response: Any) -> Any:
            return meter._serve(original, app, environ, start_response)

        DomainDispatcherApplication.__call__ = metered  # type: ignore[method-assign,assignment]

    def uninstall(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication

        if self._original is not None:
            DomainDispatcherApplication.__call__ = self._original  # type: ignore[method-assign]
            self._original = None

    def reset(self) -> None:
        with self._lock:
            self._tallies = {}

    def snapshot(self) -> dict[tuple[str, str, str, str], Tally]:
        with self._lock:
            return {key: Tally(**vars(t)) for key, t in self._tallies.items()}

    # ------------------------------------------------------------------ per request

    def _serve(
        self, original: Callable[..., Any], app: Any, environ: dict[str, Any], start: Any
    ) -> Any:
        try:
            caller, service, operation, resource, tally = self._classify(environ)
        except Exception:  # never break the emulator for a figure
            return original(app, environ, start)
        # The emulator answers a request start to end on one thread (its connection's): that
        # thread's CPU time over the call is what the request cost (a long poll's wait is none).
        cpu_started = time.thread_time()
        result = original(app, environ, start)
        tally.emulator_cpu_ms = (time.thread_time() - cpu_started) * 1000
        if service == "sqs" and operation == "ReceiveMessage":
            body = b"".join(result)
            if hasattr(result, "close"):
                result.close()
            if b"ReceiptHandle" not in body:
                tally.empty = 1
            tally.units = self._units(_received_payload(body))
            result = [body]
        with self._lock:
            key = (caller, service, operation, resource)
            self._tallies.setdefault(key, Tally()).add(tally)
        return result

    def _units(self, payload: int) -> int:
        """64 KB billing units of a payload; every request is at least one."""
        return max(1, math.ceil(payload / self.unit_bytes))

    def _classify(self, environ: dict[str, Any]) -> tuple[str, str, str, str, Tally]:
        agent = environ.get("HTTP_USER_AGENT", "")
        found = _APP_ID.search(agent)
        caller = found.group(1) if found else "runtime"
        service_match = _SERVICE.search(environ.get("HTTP_AUTHORIZATION", ""))
        service = service_match.group(1) if service_match else "unknown"
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = b""
        if service in _BODY_SERVICES and length:
            body = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(body)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        tally = Tally(requests=1, units=self._units(length))
        if service == "s3":
            operation, resource = _s3_operation(environ)
            tally.units = 1
            return caller, service, operation, resource, tally
        if target:
            operation = target.rsplit(".", 1)[-1]
            doc = _json(body)
        else:
            form = parse_qs(body.decode("utf-8", "replace")) if body else {}
            query = parse_qs(environ.get("QUERY_STRING", ""))
            operation = (form.get("Action") or query.get("Action") or ["?"])[0]
            doc = {k: v[0] for k, v in form.items()}
        resource = _resource(service, doc)
        if service in {"sqs", "sns"}:
            payload = _sent_payload(operation, doc)
            if payload is not None:
                tally.units = self._units(payload)
        if service == "dynamodb":
            tally.wru, tally.rru = _dynamodb_units(operation, doc, length)
            tally.units = math.ceil(tally.wru + tally.rru)
        if service == "events":  # billed per event (64 KB each); rules and buses are free
            entries = doc.get("Entries") if operation == "PutEvents" else None
            tally.units = sum(self._units(len(json.dumps(e))) for e in entries or [])
        return caller, service, operation, resource, tally


def _attributes_size(attributes: Any) -> int:
    """Bytes SQS and SNS count for message attributes: name, type and value of each."""
    if not isinstance(attributes, dict):
        return 0
    size = 0
    for name, value in attributes.items():
        size += len(str(name).encode())
        if isinstance(value, dict):
            size += len(str(value.get("DataType", "")).encode())
            size += len(str(value.get("StringValue", "")).encode())
    return size


def _message_size(message: Mapping[str, Any], body_key: str) -> int:
    """Bytes of one message's body (`body_key`) and attributes."""
    body = len(str(message.get(body_key, "")).encode())
    return body + _attributes_size(message.get("MessageAttributes"))


def _sent_payload(operation: str, doc: dict[str, Any]) -> int | None:
    """The payload AWS bills for a send or publish: message bodies plus their attributes.

    Not the HTTP body: SQS's JSON protocol escapes the body's quotes and SNS's query protocol
    percent-encodes it, which inflates a JSON chunk by up to ~1.7x. None: not a send.
    """
    if operation == "SendMessage":
        return _message_size(doc, "MessageBody")
    if operation == "SendMessageBatch":
        entries = doc.get("Entries") or []
        return sum(_message_size(e, "MessageBody") for e in entries if isinstance(e, dict))
    if operation in {"Publish", "PublishBatch"}:
        # Query protocol, flattened: Message, PublishBatchRequestEntries.member.N.Message and
        # ...MessageAttributes.entry.N.Name / .Value.DataType / .Value.StringValue.
        return sum(
            len(str(v).encode())
            for k, v in doc.items()
            if k == "Message"
            or k.endswith(".Message")
            or k.endswith(".Name")
            or k.endswith(".DataType")
            or k.endswith(".StringValue")
        )
    return None


def _received_payload(body: bytes) -> int:
    """Bodies plus attributes of the messages a ReceiveMessage response carries."""
    messages = _json(body).get("Messages") or []
    return sum(_message_size(m, "Body") for m in messages if isinstance(m, dict))


def _json(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body) if body else {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _resource(service: str, doc: dict[str, Any]) -> str:
    if service == "sqs":
        return str(doc.get("QueueUrl", "")).rsplit("/", 1)[-1]
    if service == "sns":
        return str(doc.get("TopicArn", "")).rsplit(":", 1)[-1]
    if service == "dynamodb":
        if "TableName" in doc:
            return str(doc["TableName"])
        tables = list((doc.get("RequestItems") or {}).keys())
        return ",".join(sorted(tables))
    return ""


def _dynamodb_units(operation: str, doc: dict[str, Any], length: int) -> tuple[float, float]:
    """Request units as on-demand bills them, estimated from the request.

    A write costs one WRU per started KB of the item (the request's JSON stands in for the
    item: a slight overestimate); a transactional write two; a failed conditional write still
    one. Reads: one RRU per 4 KB, halved when eventually consistent (estimated as one item).
    """
    if operation in DDB_WRITES:
        return float(max(1, math.ceil(length / 1024))), 0.0
    if operation == "BatchWriteItem":
        items = [w for ws in (doc.get("RequestItems") or {}).values() for w in ws]
        per = max(1, math.ceil(length / max(1, len(items)) / 1024))
        return float(per * len(items)), 0.0
    if operation == "TransactWriteItems":
        items = doc.get("TransactItems") or []
        per = max(1, math.ceil(length / max(1, len(items)) / 1024))
        return float(2 * per * len(items)), 0.0
    if operation in DDB_READS or operation in {"BatchGetItem", "TransactGetItems"}:
        strong = bool(doc.get("ConsistentRead"))
        return 0.0, 1.0 if strong or operation == "TransactGetItems" else 0.5
    return 0.0, 0.0


def _s3_operation(environ: dict[str, Any]) -> tuple[str, str]:
    """The S3 operation from method, path and query (path-style, as boto3 uses on loopback)."""
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    parts = path.lstrip("/").split("/", 1)
    bucket = parts[0]
    has_key = len(parts) > 1 and parts[1] != ""
    return _s3_name(method, has_key, query, environ), bucket


def _s3_name(method: str, has_key: bool, query: dict[str, Any], environ: dict[str, Any]) -> str:
    if has_key:
        if method == "GET":
            return "GetObjectTagging" if "tagging" in query else "GetObject"
        if method == "HEAD":
            return "HeadObject"
        if method == "PUT":
            if "partNumber" in query:
                return "UploadPart"
            if "tagging" in query:
                return "PutObjectTagging"
            if environ.get("HTTP_X_AMZ_COPY_SOURCE"):
                return "CopyObject"
            return "PutObject"
        if method == "POST":
            return "CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload"
        if method == "DELETE":
            return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    if method == "GET":
        if "list-type" in query:
            return "ListObjectsV2"
        for sub in ("notification", "policy", "versioning", "tagging", "location", "encryption"):
            if sub in query:
                return f"GetBucket{sub.capitalize()}"
        return "ListObjects" if environ.get("PATH_INFO", "/") != "/" else "ListBuckets"
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    if method == "HEAD":
        return "HeadBucket"
    return f"{method}Bucket"
