"""IAM enforced at the emulator: each function's calls are allowed only as its role allows them.

A WSGI middleware around moto's application, outermost (`Emulator.start`: enforcement, then
`apifaults`, then moto). Switched on by the runtime once the stage is deployed (`enforce`);
until then every request passes untouched, as before. Once on, every request is one of:

- the operator's (`emulator.CREDENTIALS`'s access key: tooling, tests, the deploy, the
  runtime's own bookkeeping, the `aws` CLI): allowed everything, as the account's admin;
- an assumed role's (a function's credentials, `assume_function_role`): the key must be one
  moto's STS handed out, the session token the one that came with it and the SigV4 signature
  the one its secret makes (`signature_matches`; else `SignatureDoesNotMatch`); then every
  (action, resource) the request needs (`required`) must be allowed by the role's policies,
  inline and attached (`Policy`: Deny wins, `*`/`?` wildcards, NotAction/NotResource). If
  not: the service's own AccessDenied answer (HTTP 403) naming principal, action and
  resource, as AWS words it. A role that may read an object but not list its bucket gets
  403, not 404, for a missing key, as from S3 (`_missing_is_denied`);
- anything else (unknown key, a dead session's token, no signature): refused as AWS refuses
  an unknown key (`InvalidClientTokenId`, `UnrecognizedClientException`, S3's
  `InvalidAccessKeyId`), HTTP 403.

moto's own IAM check (`INITIAL_NO_AUTH_ACTION_COUNT`) is not used: it checks most services
against `*` rather than the request's resource, cannot tell an operator from a function, and
reads every policy from the IAM backend on each request. Here the resource ARN is built from
the request itself (table, index, queue URL, topic, bucket/key, parameter name, ...), and a
role's policies are compiled once and kept until IAM or CloudFormation changes anything (a
redeploy, `put_role_policy`: any request to those services that is not a read) or moto is
reset. Decisions per (role, action, resource) are remembered as well, so a request costs
a header parse, the signature (a hash of the body unless it sends its own, four HMACs
cached per day and service, one per request), a few dict look-ups and, for JSON services,
reading the names it needs from its body (DynamoDB's parsed body is handed on to the
emulator's parse, `PARSED_BODY`). moto's own `check_signature` needs moto's request object
and its IAM check on; this one reads the WSGI environ.

Not checked: presigned URLs' signatures (their key and token are), session expiry (a `local
up` may run for days; Lambda renews its instances' credentials), Conditions (a statement
with one is taken to grant nothing and, if it denies, to deny), resource policies (bucket
and topic policies stay moto's), KMS permissions implied by SSE with customer-managed keys,
permission boundaries and SCPs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote_plus, urlsplit

from sluice_tools.local.emulator import ACCOUNT_ID, CREDENTIALS

log = logging.getLogger("sluice.local")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Need = tuple[str, str]  # (IAM action, resource ARN)

PARSED_BODY = "sluice.iam.body"  # environ key: the request's JSON body, parsed once here
IF_MISSING = "sluice.iam.if_missing"  # environ key: S3's answer if the object is missing
OPERATOR_KEY = CREDENTIALS["AWS_ACCESS_KEY_ID"]
DECISION_CACHE_MAX = 50_000  # (action, resource) decisions kept per role before starting over

_AUTH = re.compile(r"Credential=([^/,\s]+)/[^/]+/([^/]+)/([^/]+)/aws4_request")
# IAM's prefix where it differs from the signing name.
_IAM_PREFIX = {"monitoring": "cloudwatch", "email": "ses", "execute-api": "execute-api"}
_READ_PREFIXES = ("Get", "List", "Describe", "Simulate", "Generate", "Validate", "Estimate")
_CBOR_PATH = re.compile(r"/service/[^/]+/operation/([^/?]+)")


# --------------------------------------------------------------------- policies


def _pattern(patterns: Iterable[str], ignore_case: bool) -> re.Pattern[str]:
    """One regex for a statement's Action/Resource list: `*` any run, `?` any one character."""
    parts = []
    for raw in patterns:
        parts.append("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in raw))
    return re.compile("(?:" + "|".join(parts) + r")\Z", re.S | (re.I if ignore_case else 0))


def _listed(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


@dataclass(frozen=True)
class Statement:
    allow: bool
    actions: re.Pattern[str]
    not_action: bool
    resources: re.Pattern[str]
    not_resource: bool
    conditional: bool

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> Statement:
        not_action = "NotAction" in doc
        not_resource = "NotResource" in doc
        resources = _listed(doc.get("NotResource" if not_resource else "Resource"))
        return cls(
            allow=str(doc.get("Effect")) == "Allow",
            actions=_pattern(_listed(doc.get("NotAction" if not_action else "Action")), True),
            not_action=not_action,
            resources=_pattern(resources or ["*"], False),
            not_resource=not_resource,
            conditional=bool(doc.get("Condition")),
        )

    def applies(self, action: str, resource: str) -> bool:
        if (self.actions.match(action) is None) != self.not_action:
            return False
        return (self.resources.match(resource) is None) == self.not_resource


@dataclass
class Policy:
    """The statements of some policy documents, evaluated together (identity-based rules)."""

    statements: list[Statement]

    @classmethod
    def parse(cls, documents: Iterable[str | Mapping[str, Any]]) -> Policy:
        statements = []
        for document in documents:
            doc = json.loads(document) if isinstance(document, str) else document
            listed = doc.get("Statement") or []
            for statement in [listed] if isinstance(listed, dict) else listed:
                statements.append(Statement.parse(statement))
        return cls(statements)

    def decide(self, action: str, resource: str) -> str:
        """`allow`, `deny` (an explicit Deny) or `none` (no statement allows it)."""
        allowed = False
        for statement in self.statements:
            if not statement.applies(action, resource):
                continue
            if not statement.allow:
                return "deny"  # a Deny with a Condition we cannot evaluate denies too
            if not statement.conditional:
                allowed = True
        return "allow" if allowed else "none"


# --------------------------------------------------------------------- who is calling


@dataclass
class Session:
    """An assumed role's session, as moto's STS created it."""

    access_key: str
    token: str
    secret: str
    role_name: str
    session_name: str
    session_policy: str | None

    def arn(self, partition: str) -> str:
        return (
            f"arn:{partition}:sts::{ACCOUNT_ID}:assumed-role/{self.role_name}/{self.session_name}"
        )


@dataclass
class _Role:
    generation: int
    policy: Policy
    decisions: dict[Need, str] = field(default_factory=dict)


class Enforcer:
    """The emulator's IAM: sessions, compiled role policies, decisions; on or off."""

    def __init__(self) -> None:
        self.active = False
        self.generation = 0  # moves whenever IAM may have changed (see `_may_change_iam`)
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._roles: dict[str, _Role] = {}
        self.calls: Counter[tuple[str, str]] = Counter()  # (session arn, action) allowed
        self.denied: Counter[tuple[str, str, str]] = Counter()  # (session arn, action, resource)
        self.refused = 0  # requests with credentials nobody was given

    def policies_changed(self) -> None:
        """Compile every role's policies anew before its next check."""
        with self._lock:
            self.generation += 1

    def invalidate(self) -> None:
        """Forget compiled policies and sessions (moto was reset, or changed in-process)."""
        with self._lock:
            self.generation += 1
            self._sessions.clear()

    def session(self, access_key: str, token: str, partition: str) -> Session | None:
        found = self._sessions.get(access_key)
        if found is None:
            found = _find_session(access_key, partition)
            if found is None:
                return None
            self._sessions[access_key] = found
        return found if found.token == token else None

    def role_policy(self, role_name: str, partition: str) -> _Role:
        role = self._roles.get(role_name)
        generation = self.generation
        if role is None or role.generation != generation:
            role = _Role(generation, Policy.parse(_role_documents(role_name, partition)))
            self._roles[role_name] = role
        return role

    def decide(self, session: Session, need: Need, partition: str) -> str:
        role = self.role_policy(session.role_name, partition)
        decision = role.decisions.get(need)
        if decision is None:
            decision = role.policy.decide(*need)
            if len(role.decisions) >= DECISION_CACHE_MAX:
                role.decisions.clear()
            role.decisions[need] = decision
        if decision == "allow" and session.session_policy:  # the session's own limits
            decision = Policy.parse([session.session_policy]).decide(*need)
        return decision


def _find_session(access_key: str, partition: str) -> Session | None:
    from moto.sts.models import sts_backends

    try:
        backend = sts_backends[ACCOUNT_ID][partition]
    except KeyError:
        return None
    for assumed in list(backend.assumed_roles):
        if assumed.access_key_id == access_key:
            return Session(
                access_key=access_key,
                token=assumed.session_token,
                secret=assumed.secret_access_key,
                role_name=assumed.role_arn.rsplit("/", 1)[-1],
                session_name=assumed.session_name,
                session_policy=assumed.policy or None,
            )
    return None


def _role_documents(role_name: str, partition: str) -> list[str]:
    """The role's inline policies and the default version of each attached one."""
    from moto.iam.models import iam_backends

    backend = iam_backends[ACCOUNT_ID][partition]
    try:
        role = backend.get_role(role_name)
    except Exception:
        return []  # the role is gone: nothing is allowed
    documents = [str(doc) for doc in role.policies.values()]
    for managed in role.managed_policies.values():
        for version in managed.versions:
            if version.is_default:
                documents.append(str(version.document))
    return documents


_enforcer = Enforcer()


def enforcer() -> Enforcer:
    return _enforcer


def enforce(on: bool = True) -> None:
    """Turn enforcement on (the runtime, after its deploy) or off."""
    _enforcer.active = on
    _enforcer.invalidate()


def enforcing() -> bool:
    return _enforcer.active


# --------------------------------------------------------------------- the middleware


def middleware(app: WSGIApp) -> WSGIApp:
    """moto's WSGI application (with API faults) behind the IAM check."""

    def checked(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO") or "")
        if path.startswith("/moto-api"):
            if "reset" in path:
                _enforcer.invalidate()
            return app(environ, start_response)
        caller = _credential(environ)
        service = caller[1] if caller else ""
        if _enforcer.active:
            refusal = _check(environ, caller)
            if refusal is not None:
                status, headers, body = refusal
                start_response(status, headers)
                return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]
            missing = environ.pop(IF_MISSING, None)
            if missing is not None:
                return _missing_is_denied(app, environ, start_response, missing)
        if service in ("iam", "cloudformation") and _may_change_iam(service, environ):
            try:
                return app(environ, start_response)
            finally:
                _enforcer.policies_changed()
        return app(environ, start_response)

    return checked


def _missing_is_denied(
    app: WSGIApp, environ: dict[str, Any], start_response: Callable[..., Any], refusal: Refusal
) -> Iterable[bytes]:
    """S3's answer to reading a missing object without s3:ListBucket: 403, not 404.

    S3 tells a caller that may not list the bucket nothing about which keys exist.
    """
    missing: list[bool] = []

    def start(status: str, headers: Any, exc_info: Any = None) -> Any:
        if status.startswith("404"):
            missing.append(True)
            return start_response(refusal[0], refusal[1])
        return start_response(status, headers, exc_info)

    result = app(environ, start)
    if not missing:
        return result
    close = getattr(result, "close", None)
    if close is not None:
        close()
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [refusal[2]]


def _credential(environ: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(access key, service, region) from a SigV4 Authorization header or presigned query."""
    auth = str(environ.get("HTTP_AUTHORIZATION") or "")
    if not auth:
        query = str(environ.get("QUERY_STRING") or "")
        if "X-Amz-Credential" not in query:
            return None
        auth = "Credential=" + unquote_plus(parse_qs(query)["X-Amz-Credential"][0])
    found = _AUTH.search(auth)
    if found is None:
        return None
    return found.group(1), found.group(3), found.group(2)


def _token(environ: Mapping[str, Any]) -> str:
    token = environ.get("HTTP_X_AMZ_SECURITY_TOKEN")
    if token is None and "X-Amz-Security-Token" in str(environ.get("QUERY_STRING") or ""):
        token = parse_qs(str(environ["QUERY_STRING"])).get("X-Amz-Security-Token", [""])[0]
    return str(token or "")


def _may_change_iam(service: str, environ: dict[str, Any]) -> bool:
    return not operation(service, environ).startswith(_READ_PREFIXES)


Refusal = tuple[str, list[tuple[str, str]], bytes]


def _check(environ: dict[str, Any], caller: tuple[str, str, str] | None) -> Refusal | None:
    """None if the request may go on; otherwise the answer that refuses it."""
    if caller is None:
        _enforcer.refused += 1
        return unknown_credentials(_service_of(environ), environ)
    access_key, service, region = caller
    if access_key == OPERATOR_KEY:
        return None
    partition = _partition(region)
    session = _enforcer.session(access_key, _token(environ), partition)
    if session is None:
        _enforcer.refused += 1
        log.warning("IAM: refused a %s request with unknown credentials %s", service, access_key)
        return unknown_credentials(service, environ)
    if not signature_matches(environ, session.secret):
        _enforcer.refused += 1
        log.warning("IAM: a %s request of %s has a wrong signature", service, access_key)
        return bad_signature(service)
    op = operation(service, environ)
    try:
        needs = required(service, op, environ, region)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        log.warning("IAM: could not read %s:%s's resource (%s); checking '*'", service, op, exc)
        needs = [(f"{_IAM_PREFIX.get(service, service)}:{op}", "*")]
    principal = session.arn(partition)
    if not needs:
        _enforcer.calls[(principal, f"{service}:{op}")] += 1
    for need in needs:
        decision = _enforcer.decide(session, need, partition)
        if decision != "allow":
            action, resource = need
            _enforcer.denied[(principal, action, resource)] += 1
            log.warning("IAM: %s denied %s on %s", principal, action, resource)
            return access_denied(service, principal, action, resource, explicit=decision == "deny")
        _enforcer.calls[(principal, need[0])] += 1
    if service == "s3" and op in ("GetObject", "HeadObject"):
        bucket = needs[0][1].split("/", 1)[0]
        listing = ("s3:ListBucket", bucket)
        decision = _enforcer.decide(session, listing, partition)
        if decision != "allow":
            environ[IF_MISSING] = access_denied(
                service, principal, *listing, explicit=decision == "deny"
            )
    return None


_partitions: dict[str, str] = {}


def _partition(region: str) -> str:
    found = _partitions.get(region)
    if found is None:
        from moto.utilities.utils import get_partition

        found = _partitions[region] = get_partition(region)
    return found


def _service_of(environ: Mapping[str, Any]) -> str:
    target = str(environ.get("HTTP_X_AMZ_TARGET") or "")
    if target.startswith("DynamoDB"):
        return "dynamodb"
    if target.startswith("AmazonSQS"):
        return "sqs"
    return "s3" if not target and "x-www-form" not in str(environ.get("CONTENT_TYPE")) else ""


# --------------------------------------------------------------------- the signature

_SIGNED = re.compile(r"SignedHeaders=([^,\s]+)")
_SIGNATURE = re.compile(r"Signature=([0-9a-f]+)")
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_signing_keys: dict[tuple[str, str, str, str], bytes] = {}


def _signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    found = _signing_keys.get((secret, day, region, service))
    if found is None:
        key = ("AWS4" + secret).encode()
        for part in (day, region, service, "aws4_request"):
            key = hmac.digest(key, part.encode(), "sha256")
        if len(_signing_keys) > 1000:
            _signing_keys.clear()
        found = _signing_keys[(secret, day, region, service)] = key
    return found


def _header(environ: Mapping[str, Any], name: str) -> str:
    if name == "content-type":
        value = environ.get("CONTENT_TYPE")
    elif name == "content-length":
        value = environ.get("CONTENT_LENGTH")
    else:
        value = environ.get("HTTP_" + name.upper().replace("-", "_"))
    return " ".join(str(value or "").split())


def signature_matches(environ: Mapping[str, Any], secret: str) -> bool:
    """Whether the request's SigV4 signature is the one its session's secret makes.

    The canonical request is built from the request as it came (method, path and query as
    sent, the signed headers, the payload hash header or the body's hash), as SigV4
    prescribes; S3 signs its path as is, the other services the path encoded once more.
    Presigned URLs (query signatures) are taken on their key and token alone.
    """
    auth = str(environ.get("HTTP_AUTHORIZATION") or "")
    if not auth:
        return True
    credential = _AUTH.search(auth)
    signed = _SIGNED.search(auth)
    signature = _SIGNATURE.search(auth)
    if credential is None or signed is None or signature is None:
        return False
    day, region, service = auth.split("Credential=", 1)[1].split("/")[1:4]
    raw = _wsgi_text(str(environ.get("RAW_URI") or environ.get("PATH_INFO") or "/"))
    path, _, query = raw.partition("?")
    if service != "s3":
        from botocore.utils import normalize_url_path

        path = quote(normalize_url_path(path), safe="/~")
    pairs = sorted(pair.partition("=")[::2] for pair in query.split("&") if pair)
    names = signed.group(1).split(";")
    payload = environ.get("HTTP_X_AMZ_CONTENT_SHA256")
    if not payload:
        body = _body(environ)
        payload = hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256
    canonical = "\n".join(
        [
            str(environ.get("REQUEST_METHOD") or "GET").upper(),
            path or "/",
            "&".join(f"{k}={v}" for k, v in pairs),
            "".join(f"{name}:{_header(environ, name)}\n" for name in names),
            ";".join(names),
            str(payload),
        ]
    )
    stamp = _header(environ, "x-amz-date")
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            stamp,
            f"{day}/{region}/{service}/aws4_request",
            hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest(),
        ]
    )
    key = _signing_key(secret, day, region, service)
    expected = hmac.digest(key, to_sign.encode(), "sha256").hex()
    return hmac.compare_digest(expected, signature.group(1))


# --------------------------------------------------------------------- what a request needs


def operation(service: str, environ: Mapping[str, Any]) -> str:
    """The API operation of a request (JSON target, query Action, S3 or REST path)."""
    target = str(environ.get("HTTP_X_AMZ_TARGET") or "")
    if target:
        return target.rpartition(".")[2]
    if service == "s3":
        from sluice_tools.local.apifaults import s3_operation

        return s3_operation(environ)
    query = str(environ.get("QUERY_STRING") or "")
    if "Action=" in query:
        return parse_qs(query)["Action"][0]
    if "x-www-form-urlencoded" in str(environ.get("CONTENT_TYPE") or ""):
        action = _form_value(environ, "Action")
        if action:
            return action
    cbor = _CBOR_PATH.match(str(environ.get("PATH_INFO") or ""))
    if cbor:
        return cbor.group(1)
    return _rest_operation(service, environ)


def _body(environ: Mapping[str, Any]) -> bytes:
    stream = environ.get("wsgi.input")
    getvalue = getattr(stream, "getvalue", None)  # the emulator's server buffers every body
    return bytes(getvalue()) if getvalue is not None else b""


def _form_value(environ: Mapping[str, Any], name: str) -> str | None:
    """One member of a form-encoded body, without decoding all of it (a PublishBatch is big).

    `&` and `=` inside values are percent-encoded, so `name=` at the start or after an `&`
    is the member (found with `bytes.find`: a regex with an alternation scans slowly).
    """
    body = _body(environ)
    key = name.encode() + b"="
    at = body.find(key)
    while at > 0 and body[at - 1 : at] != b"&":
        at = body.find(key, at + 1)
    if at < 0:
        return None
    start = at + len(key)
    end = body.find(b"&", start)
    value = body[start:] if end < 0 else body[start:end]
    return unquote_plus(value.decode("utf-8", "replace"))


def _json_body(environ: dict[str, Any]) -> dict[str, Any]:
    parsed = environ.get(PARSED_BODY)
    if parsed is None:
        body = _body(environ)
        parsed = json.loads(body) if body else {}
        environ[PARSED_BODY] = parsed
    return parsed if isinstance(parsed, dict) else {}


_LARGE_BODY = 16384
_MEMBER = re.compile(rb'\s*:\s*"((?:[^"\\]|\\.)*)"')


def _json_string(environ: dict[str, Any], name: str) -> str | None:
    """A top-level string member of a JSON body; in a large body it is looked up, not parsed.

    The member name in (unescaped) quotes can only be a key: quotes inside strings are
    escaped. The names looked up this way (`QueueUrl`) are keys at the top level only in
    their operations' shapes (botocore refuses unknown members), so the first such key
    followed by a string is the member. Otherwise the body is parsed.
    """
    body = _body(environ)
    if len(body) > _LARGE_BODY and PARSED_BODY not in environ:
        key = b'"' + name.encode() + b'"'
        at = body.find(key)
        found = _MEMBER.match(body, at + len(key)) if at >= 0 else None
        if found:
            return str(json.loads(b'"' + found.group(1) + b'"'))
    value = _json_body(environ).get(name)
    return None if value is None else str(value)


def required(service: str, op: str, environ: dict[str, Any], region: str) -> list[Need]:
    """The (action, resource ARN) pairs IAM checks for this request, as AWS checks them."""
    prefix = _IAM_PREFIX.get(service, service)
    partition = _partition(region)
    if service == "s3":
        return _s3_needs(op, environ, partition)
    if service == "sqs":
        return _sqs_needs(op, environ, region, partition)
    if service == "sns":
        return _sns_needs(op, environ, region, partition)
    if service == "dynamodb":
        return _dynamodb_needs(op, environ, region, partition)
    if service == "ssm":
        return _ssm_needs(op, environ, region, partition)
    if service == "sts":
        if op == "GetCallerIdentity":
            return []  # allowed to every principal, whatever its policies say
        if op == "AssumeRole":
            return [("sts:AssumeRole", _form_value(environ, "RoleArn") or "*")]
        return [(f"sts:{op}", "*")]
    if service == "logs":
        return _logs_needs(op, environ, region, partition)
    if service == "events" and op == "PutEvents":
        entries = _json_body(environ).get("Entries") or []
        buses = {str(e.get("EventBusName") or "default") for e in entries} or {"default"}
        return [
            (
                "events:PutEvents",
                bus
                if bus.startswith("arn:")
                else _arn(partition, "events", region, f"event-bus/{bus}"),
            )
            for bus in sorted(buses)
        ]
    if service == "lambda":
        name = _lambda_function(environ)
        if name is None:
            return [(f"lambda:{op}", "*")]
        arn = (
            name
            if name.startswith("arn:")
            else _arn(partition, "lambda", region, f"function:{name}")
        )
        return [(f"lambda:{'InvokeFunction' if op == 'Invoke' else op}", arn)]
    if service == "kms":
        key = str(_json_body(environ).get("KeyId") or "")
        if not key:
            return [(f"kms:{op}", "*")]
        if not key.startswith("arn:"):
            key = _arn(partition, "kms", region, key if key.startswith("alias/") else f"key/{key}")
        return [(f"kms:{op}", key)]
    # PutMetricData, X-Ray's segments and anything without a resource of its own.
    return [(f"{prefix}:{op}", "*")]


def _arn(
    partition: str, service: str, region: str, resource: str, account: str = ACCOUNT_ID
) -> str:
    return f"arn:{partition}:{service}:{region}:{account}:{resource}"


# S3: API operation → IAM action where they differ (bucket- or object-level by the path).
_S3_ACTIONS = {
    "HeadObject": "s3:GetObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "CopyObject": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListParts": "s3:ListMultipartUploadParts",
    "ListObjects": "s3:ListBucket",
    "ListObjectsV2": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
    "ListObjectVersions": "s3:ListBucketVersions",
    "ListBuckets": "s3:ListAllMyBuckets",
    "GetBucketNotificationConfiguration": "s3:GetBucketNotification",
    "DeleteObjects": "s3:DeleteObject",
}
_VERSIONED = {"s3:GetObject": "s3:GetObjectVersion", "s3:DeleteObject": "s3:DeleteObjectVersion"}
_S3_SUBRESOURCES = {  # bucket-level GET/PUT/DELETE ?<sub>: the action's noun
    "policy": "BucketPolicy",
    "versioning": "BucketVersioning",
    "notification": "BucketNotification",
    "tagging": "BucketTagging",
    "acl": "BucketAcl",
    "cors": "BucketCORS",
    "lifecycle": "LifecycleConfiguration",
    "encryption": "EncryptionConfiguration",
    "location": "BucketLocation",
    "publicAccessBlock": "BucketPublicAccessBlock",
    "ownershipControls": "BucketOwnershipControls",
}


def _wsgi_text(value: str) -> str:
    return value.encode("latin-1", "replace").decode("utf-8", "replace")


def _s3_needs(op: str, environ: Mapping[str, Any], partition: str) -> list[Need]:
    path = _wsgi_text(str(environ.get("PATH_INFO") or "/")).lstrip("/")
    bucket, _, key = path.partition("/")
    query = parse_qs(str(environ.get("QUERY_STRING") or ""), keep_blank_values=True)
    if not bucket:
        return [("s3:ListAllMyBuckets", "*")]
    bucket_arn = f"arn:{partition}:s3:::{bucket}"
    method = str(environ.get("REQUEST_METHOD") or "GET")
    if not key:
        for sub, noun in _S3_SUBRESOURCES.items():
            if sub in query:
                verb = {"GET": "Get", "PUT": "Put", "DELETE": "Delete"}.get(method, "Get")
                verb = "Put" if verb == "Delete" and sub not in ("policy", "tagging") else verb
                return [(f"s3:{verb}{noun}", bucket_arn)]
        if "uploads" in query:
            return [("s3:ListBucketMultipartUploads", bucket_arn)]
        if op == "DeleteObjects":
            keys = re.findall(rb"<Key>(.*?)</Key>", _body(environ), re.S)
            from xml.sax.saxutils import unescape

            return [
                ("s3:DeleteObject", f"{bucket_arn}/{unescape(k.decode('utf-8', 'replace'))}")
                for k in keys
            ] or [("s3:DeleteObject", f"{bucket_arn}/*")]
        action = _S3_ACTIONS.get(op, f"s3:{op}")
        return [(action, bucket_arn)]
    action = _S3_ACTIONS.get(op, f"s3:{op}")
    if "versionId" in query and action in _VERSIONED:
        action = _VERSIONED[action]
    needs = [(action, f"{bucket_arn}/{key}")]
    source = environ.get("HTTP_X_AMZ_COPY_SOURCE")
    if source:  # CopyObject, UploadPartCopy: reading the source too
        source_path, _, source_query = unquote_plus(str(source)).lstrip("/").partition("?")
        read = "s3:GetObjectVersion" if "versionId=" in source_query else "s3:GetObject"
        needs.append((read, f"arn:{partition}:s3:::{source_path}"))
    return needs


_SQS_ACTIONS = {
    "SendMessageBatch": "sqs:SendMessage",
    "DeleteMessageBatch": "sqs:DeleteMessage",
    "ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
}


def _sqs_value(environ: dict[str, Any], name: str) -> str | None:
    if "x-www-form-urlencoded" in str(environ.get("CONTENT_TYPE") or ""):
        return _form_value(environ, name)
    return _json_string(environ, name)


def _sqs_needs(op: str, environ: dict[str, Any], region: str, partition: str) -> list[Need]:
    action = _SQS_ACTIONS.get(op, f"sqs:{op}")
    if op == "ListQueues":
        return [(action, "*")]
    url = _sqs_value(environ, "QueueUrl")
    if url:
        parts = urlsplit(url).path.strip("/").split("/")
        account, name = (parts[-2], parts[-1]) if len(parts) >= 2 else (ACCOUNT_ID, parts[-1])
    else:
        name = _sqs_value(environ, "QueueName") or "*"
        account = _sqs_value(environ, "QueueOwnerAWSAccountId") or ACCOUNT_ID
    return [(action, _arn(partition, "sqs", region, name, account))]


def _sns_needs(op: str, environ: dict[str, Any], region: str, partition: str) -> list[Need]:
    action = "sns:Publish" if op == "PublishBatch" else f"sns:{op}"
    topic = _form_value(environ, "TopicArn") or _form_value(environ, "TargetArn")
    if topic is None and op == "CreateTopic":
        topic = _arn(partition, "sns", region, _form_value(environ, "Name") or "*")
    if topic is None:
        subscription = _form_value(environ, "SubscriptionArn")
        if subscription:
            topic = subscription.rsplit(":", 1)[0]
    if topic is None:
        topic = _form_value(environ, "ResourceArn") or "*"
    return [(action, topic)]


# The action each TransactWriteItems/TransactGetItems entry needs, as AWS checks it.
TRANSACT_ACTIONS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
    "Get": "dynamodb:GetItem",
}


def _dynamodb_needs(op: str, environ: dict[str, Any], region: str, partition: str) -> list[Need]:
    def table(name: str) -> str:
        return (
            name
            if name.startswith("arn:")
            else _arn(partition, "dynamodb", region, f"table/{name}")
        )

    action = f"dynamodb:{op}"
    body = _json_body(environ)
    if op in ("TransactWriteItems", "TransactGetItems"):
        needs: list[Need] = []
        for item in body.get("TransactItems") or []:
            for kind, detail in item.items():
                need = (TRANSACT_ACTIONS.get(kind, f"dynamodb:{kind}"), table(detail["TableName"]))
                if need not in needs:
                    needs.append(need)
        return needs
    if op in ("BatchWriteItem", "BatchGetItem"):
        return [(action, table(name)) for name in body.get("RequestItems") or {}]
    name = body.get("TableName") or body.get("ResourceArn") or body.get("TableArn")
    if not name:
        return [(action, "*")]
    arn = table(str(name))
    if op in ("Query", "Scan") and body.get("IndexName"):
        arn = f"{arn}/index/{body['IndexName']}"
    return [(action, arn)]


def _ssm_needs(op: str, environ: dict[str, Any], region: str, partition: str) -> list[Need]:
    def parameter(name: str) -> str:
        if name.startswith("arn:"):
            return name
        return _arn(partition, "ssm", region, "parameter/" + name.lstrip("/"))

    body = _json_body(environ)
    action = f"ssm:{op}"
    if "Names" in body:
        return [(action, parameter(str(n))) for n in body["Names"]]
    name = body.get("Name") or body.get("Path")
    if name is None:
        return [(action, "*")]
    return [(action, parameter(str(name).rstrip("/") or "/"))]


def _logs_needs(op: str, environ: dict[str, Any], region: str, partition: str) -> list[Need]:
    body = _json_body(environ)
    group = body.get("logGroupName")
    if not group:
        return [(f"logs:{op}", "*")]
    resource = f"log-group:{group}"
    if body.get("logStreamName"):
        resource += f":log-stream:{body['logStreamName']}"
    return [(f"logs:{op}", _arn(partition, "logs", region, resource))]


_LAMBDA_PATH = re.compile(r"/[0-9-]+/functions/([^/]+)(/[^?]*)?")


def _lambda_function(environ: Mapping[str, Any]) -> str | None:
    found = _LAMBDA_PATH.match(str(environ.get("PATH_INFO") or ""))
    return found.group(1) if found else None


def _rest_operation(service: str, environ: Mapping[str, Any]) -> str:
    """The operation of a REST request of the services functions may call (moto's router)."""
    method = str(environ.get("REQUEST_METHOD") or "GET")
    path = str(environ.get("PATH_INFO") or "")
    if service == "xray":
        return {
            "/TraceSegments": "PutTraceSegments",
            "/TelemetryRecords": "PutTelemetryRecords",
        }.get(path, path.strip("/") or "Unknown")
    if service == "lambda":
        tail = (_LAMBDA_PATH.match(path) or [None, None, None])[2] or ""
        if tail.startswith("/invocations"):
            return "Invoke"
        if tail.startswith("/configuration"):
            return "GetFunctionConfiguration" if method == "GET" else "UpdateFunctionConfiguration"
        if tail.startswith("/code"):
            return "UpdateFunctionCode"
        return {"GET": "GetFunction", "DELETE": "DeleteFunction"}.get(method, "CreateFunction")
    return f"{method.title()}{path.strip('/').split('/')[0].title() or 'Unknown'}"


# --------------------------------------------------------------------- answers

_STATUS_403 = "403 Forbidden"


def _request_id() -> str:
    return str(uuid.uuid4())


def denial_message(principal: str, action: str, resource: str, explicit: bool, quoted: bool) -> str:
    shown = f'"{resource}"' if quoted else resource
    why = (
        "with an explicit deny in an identity-based policy"
        if explicit
        else f"because no identity-based policy allows the {action} action"
    )
    return f"User: {principal} is not authorized to perform: {action} on resource: {shown} {why}"


def access_denied(
    service: str, principal: str, action: str, resource: str, explicit: bool = False
) -> Refusal:
    """The service's own AccessDenied answer (403), worded as AWS words it."""
    if service == "sns":  # SNS says AuthorizationError and spells its actions SNS:Publish
        shown = "SNS:" + action.partition(":")[2]
        message = denial_message(principal, shown, resource, explicit, quoted=False)
        return _query_error("AuthorizationError", message, "sns")
    if service == "s3":
        return s3_error("AccessDenied", denial_message(principal, action, resource, explicit, True))
    message = denial_message(principal, action, resource, explicit, quoted=False)
    if service == "sqs":
        return _json_error("AccessDenied", message, query_code="AccessDenied;Sender")
    if _is_query(service):
        return _query_error("AccessDenied", message, service)
    return _json_error("AccessDeniedException", message)


_INVALID_TOKEN = "The security token included in the request is invalid."
_BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method."
)


def bad_signature(service: str) -> Refusal:
    """How the service refuses a request whose signature does not match (403)."""
    if service == "s3":
        return s3_error("SignatureDoesNotMatch", _BAD_SIGNATURE)
    if service == "sqs":
        return _json_error("SignatureDoesNotMatch", _BAD_SIGNATURE, "SignatureDoesNotMatch;Sender")
    if _is_query(service):
        return _query_error("SignatureDoesNotMatch", _BAD_SIGNATURE, service)
    return _json_error("InvalidSignatureException", _BAD_SIGNATURE)


def unknown_credentials(service: str, environ: Mapping[str, Any]) -> Refusal:
    """How the service refuses a key it does not know (403)."""
    if service == "s3":
        return s3_error(
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        )
    if service == "sqs":
        return _json_error("InvalidClientTokenId", _INVALID_TOKEN, "InvalidClientTokenId;Sender")
    if _is_query(service) or (not service and "x-www-form" in str(environ.get("CONTENT_TYPE"))):
        return _query_error("InvalidClientTokenId", _INVALID_TOKEN, service or "sts")
    return _json_error("UnrecognizedClientException", _INVALID_TOKEN)


_QUERY_SERVICES = frozenset({"sns", "sts", "iam", "cloudformation", "ec2", "ses", "elasticache"})


def _is_query(service: str) -> bool:
    return service in _QUERY_SERVICES


def _json_error(code: str, message: str, query_code: str | None = None) -> Refusal:
    body = json.dumps({"__type": code, "message": message, "Message": message})
    headers = [
        ("Content-Type", "application/x-amz-json-1.0"),
        ("x-amzn-RequestId", _request_id()),
        ("x-amzn-ErrorType", code),
    ]
    if query_code:  # SQS's JSON protocol tells botocore the query-era code this way
        headers.append(("x-amzn-query-error", query_code))
    return _STATUS_403, headers, body.encode()


def _query_error(code: str, message: str, service: str) -> Refusal:
    body = (
        "<ErrorResponse><Error><Type>Sender</Type>"
        f"<Code>{code}</Code><Message>{_xml(message)}</Message></Error>"
        f"<RequestId>{_request_id()}</RequestId></ErrorResponse>"
    )
    return (
        _STATUS_403,
        [("Content-Type", "text/xml"), ("x-amzn-RequestId", _request_id())],
        body.encode(),
    )


def s3_error(code: str, message: str, status: str = _STATUS_403) -> Refusal:
    """An S3 error answer (XML body, request id header) with this status line."""
    request_id = uuid.uuid4().hex[:16].upper()
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{_xml(message)}</Message>"
        f"<RequestId>{request_id}</RequestId><HostId>sluice-local</HostId></Error>"
    )
    headers = [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)]
    return status, headers, body.encode()


def _xml(text: str) -> str:
    from xml.sax.saxutils import escape

    return escape(text, {'"': "&quot;"})


# --------------------------------------------------------------------- the runtime's side


def assume_function_role(lam: Any, sts: Any, function_name: str) -> dict[str, str]:
    """Credentials of the function's execution role (operator's clients), as Lambda gives them."""
    role_arn = lam.get_function_configuration(FunctionName=function_name)["Role"]
    answer = sts.assume_role(RoleArn=role_arn, RoleSessionName=function_name[:64])
    credentials = answer["Credentials"]
    return {
        "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
        "AWS_SESSION_TOKEN": credentials["SessionToken"],
    }
