"""Scheduled pulls land what a source returned in the landing bucket and move its cursor."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from ingest_support import Platform

from chalicelib import safe_http
from chalicelib.pull import Puller, Source, landing_key
from chalicelib.settings import IngestSettings
from sluice import aws
from sluice.config import Settings
from sluice.errors import ConfigError

EVENT_TIME = "2026-11-27T06:05:00Z"


class FakeSource:
    """What the local HTTP server answers: a status, a body and headers; it logs requests."""

    def __init__(self) -> None:
        self.status = 200
        self.body: bytes = b""
        self.headers: dict[str, str] = {}
        self.requests: list[dict[str, Any]] = []


@pytest.fixture
def http_source() -> Iterator[tuple[str, FakeSource]]:
    fake = FakeSource()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fake.requests.append({"path": self.path, "headers": dict(self.headers)})
            self.send_response(fake.status)
            for name, value in fake.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(fake.body)))
            self.end_headers()
            self.wfile.write(fake.body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/orders", fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def make_puller(platform: Platform) -> Callable[..., Puller]:
    def make(*sources: Source, timeout_s: float = 5.0, deadline_s: float = 60.0) -> Puller:
        # The test sources are local http servers: allowed only by the loopback opt-in.
        ingest = IngestSettings(
            types=frozenset({"order"}),
            pull_timeout_s=timeout_s,
            pull_source_deadline_s=deadline_s,
            pull_allow_http_loopback=True,
        )
        return Puller(list(sources), settings=Settings.from_env(), ingest=ingest)

    return make


def cursor_of(platform: Platform, name: str) -> str | None:
    item = (
        aws.dynamodb()
        .get_item(TableName=platform.names.cursor_table, Key={"source": {"S": name}})
        .get("Item")
    )
    return None if item is None else item["cursor"]["S"]


def set_cursor(platform: Platform, name: str, cursor: str) -> None:
    aws.dynamodb().put_item(
        TableName=platform.names.cursor_table,
        Item={"source": {"S": name}, "cursor": {"S": cursor}},
    )


def landed(platform: Platform) -> dict[str, bytes]:
    s3 = aws.s3()
    bucket = platform.names.landing_bucket
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def test_a_pull_lands_the_records_under_incoming_and_moves_the_cursor(
    platform: Platform,
    make_puller: Callable[..., Puller],
    http_source: tuple[str, FakeSource],
) -> None:
    url, fake = http_source
    aws.client("ssm").put_parameter(
        Name="/sluice/test/pull/shop/token", Value="s3cret", Type="SecureString"
    )
    set_cursor(platform, "shop", "41")
    fake.body = json.dumps(
        {"records": [{"order_id": "o-1"}, {"order_id": "o-2"}], "next_cursor": "43"}
    ).encode()
    source = Source("shop", url, "order", "since", "json", "pull/shop/token")

    [result] = make_puller(source).pull_all(EVENT_TIME)

    assert result.ok
    assert (result.records, result.cursor) == (2, "43")
    key = "incoming/order/pulls/shop/20261127T060500Z-41.jsonl"
    assert result.key == key
    assert landed(platform) == {key: b'{"order_id":"o-1"}\n{"order_id":"o-2"}\n'}
    assert cursor_of(platform, "shop") == "43"
    [request] = fake.requests
    assert request["path"] == "/orders?since=41"
    assert request["headers"]["Authorization"] == "Bearer s3cret"


def test_a_first_pull_sends_no_cursor_and_stores_the_one_it_got(
    platform: Platform,
    make_puller: Callable[..., Puller],
    http_source: tuple[str, FakeSource],
) -> None:
    url, fake = http_source
    fake.body = b'{"id": 1}\n{"id": 2}\n'
    fake.headers = {"X-Next-Cursor": "page-2"}
    source = Source("feed", url, "order", "page", "jsonl")

    [result] = make_puller(source).pull_all(EVENT_TIME)

    assert fake.requests[0]["path"] == "/orders"
    assert landed(platform) == {
        "incoming/order/pulls/feed/20261127T060500Z-start.jsonl": b'{"id": 1}\n{"id": 2}\n'
    }
    assert cursor_of(platform, "feed") == "page-2"
    assert result.records == 2


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b'{"error": "boom"}'),
        (404, b"not here"),
        (200, b"<html>not json</html>"),
        (200, b'{"items": []}'),
    ],
    ids=["server-error", "not-found", "not-json", "no-records-field"],
)
def test_a_failed_pull_keeps_the_cursor_and_lands_nothing(
    platform: Platform,
    make_puller: Callable[..., Puller],
    http_source: tuple[str, FakeSource],
    status: int,
    body: bytes,
) -> None:
    url, fake = http_source
    fake.status, fake.body = status, body
    set_cursor(platform, "shop", "41")

    [result] = make_puller(Source("shop", url, "order", "since")).pull_all(EVENT_TIME)

    assert not result.ok
    assert cursor_of(platform, "shop") == "41"
    assert landed(platform) == {}


def test_a_source_that_does_not_answer_in_time_keeps_its_cursor(
    platform: Platform, make_puller: Callable[..., Puller]
) -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never answers
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/slow"
        set_cursor(platform, "slow", "7")
        [result] = make_puller(Source("slow", url, "order", "since"), timeout_s=0.3).pull_all(
            EVENT_TIME
        )
    finally:
        listener.close()

    assert not result.ok
    assert cursor_of(platform, "slow") == "7"


def test_one_failing_source_does_not_stop_the_others(
    platform: Platform,
    make_puller: Callable[..., Puller],
    http_source: tuple[str, FakeSource],
) -> None:
    url, fake = http_source
    fake.body = json.dumps({"records": [{"id": 1}], "next_cursor": "2"}).encode()
    broken = Source("broken", "http://127.0.0.1:9/nothing", "order", "since")
    good = Source("good", url, "order", "since")

    results = make_puller(broken, good).pull_all(EVENT_TIME)

    assert [(r.source, r.ok) for r in results] == [("broken", False), ("good", True)]
    assert cursor_of(platform, "good") == "2"


def test_a_pulled_file_key_is_safe_for_any_cursor() -> None:
    source = Source("shop", "http://x", "order", "since")

    key = landing_key(source, "20261127T060500Z", "2026-11-27T06:00:00+00:00/é")

    assert key == "incoming/order/pulls/shop/20261127T060500Z-2026-11-27T06_00_00_00_00_.jsonl"


def test_an_absolute_secret_parameter_is_refused_so_stages_cannot_read_each_other() -> None:
    raw = {"name": "shop", "url": "http://x", "type": "order", "cursor_param": "c"}
    with pytest.raises(ConfigError, match="must be a relative SSM name"):
        Source.from_dict({**raw, "secret_parameter": "/sluice/prod/pull/shop/token"})


# --- what a source may be, where its token may go, how long it may take (safe_http) ---


RECORDS = json.dumps({"records": [{"id": 1}], "next_cursor": "2"}).encode()


@contextlib.contextmanager
def serving(
    name: str, seen: list[tuple[str, str, str | None]], moved: Callable[[str], str | None]
) -> Iterator[str]:
    """A source that logs (server, path, Authorization) and redirects where `moved(path)`
    says (else answers one record); yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((name, self.path, self.headers.get("Authorization")))
            location = moved(self.path)
            self.send_response(302 if location else 200)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Length", "0" if location else str(len(RECORDS)))
            self.end_headers()
            if not location:
                self.wfile.write(RECORDS)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_redirect_to_another_origin_never_carries_the_token(
    platform: Platform, make_puller: Callable[..., Puller]
) -> None:
    seen: list[tuple[str, str, str | None]] = []
    aws.client("ssm").put_parameter(
        Name="/sluice/test/pull/shop/token", Value="s3cret", Type="SecureString"
    )
    # B is another port of the same host: another origin.
    with (
        serving("B", seen, lambda _: None) as b_url,
        serving("A", seen, lambda path: b_url + path) as a_url,
    ):
        source = Source("shop", a_url + "/orders", "order", "since", "json", "pull/shop/token")
        [result] = make_puller(source).pull_all(EVENT_TIME)

    assert not result.ok
    assert "another origin refused" in (result.error or "")
    assert seen == [("A", "/orders", "Bearer s3cret")]  # B was never asked
    assert landed(platform) == {}


def test_a_redirect_within_the_same_origin_is_followed(
    platform: Platform, make_puller: Callable[..., Puller]
) -> None:
    seen: list[tuple[str, str, str | None]] = []
    aws.client("ssm").put_parameter(
        Name="/sluice/test/pull/moved/token", Value="s3cret", Type="SecureString"
    )
    with serving("A", seen, lambda path: "/new" if path == "/old" else None) as url:
        source = Source("moved", url + "/old", "order", "since", "json", "pull/moved/token")
        [result] = make_puller(source).pull_all(EVENT_TIME)

    assert result.ok, result.error
    assert seen == [("A", "/old", "Bearer s3cret"), ("A", "/new", "Bearer s3cret")]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "scheme 'file' refused"),
        ("ftp://example.com/x", "scheme 'ftp' refused"),
        ("https://169.254.169.254/latest/meta-data/", "non-public address"),
        ("https://[fd00:ec2::254]/latest/meta-data/", "non-public address"),
        ("https://10.1.2.3/orders", "non-public address"),
        ("https://192.168.0.10/orders", "non-public address"),
        ("https://127.0.0.1/orders", "non-public address"),
        ("https://localhost/orders", "non-public address"),
        ("http://203.0.113.9/orders", "only loopback may use http"),
    ],
)
def test_sources_outside_the_public_https_web_are_refused(url: str, reason: str) -> None:
    with pytest.raises(safe_http.UnsafeSourceError, match=re.escape(reason)):
        safe_http.get(
            url,
            {},
            deadline=time.monotonic() + 5,
            max_bytes=10,
            read_timeout_s=1,
            allow_http_loopback=True,
        )


def test_plain_http_is_refused_without_the_loopback_opt_in() -> None:
    with pytest.raises(safe_http.UnsafeSourceError, match="use https"):
        safe_http.get(
            "http://127.0.0.1:9/orders",
            {},
            deadline=time.monotonic() + 5,
            max_bytes=10,
            read_timeout_s=1,
        )


def test_a_source_that_trickles_its_answer_is_cut_by_the_deadline(
    platform: Platform, make_puller: Callable[..., Puller]
) -> None:
    stop = threading.Event()

    class Trickle(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            while not stop.is_set():  # a byte every 0.1 s: each read is in time, the whole not
                self.wfile.write(b" ")
                self.wfile.flush()
                stop.wait(0.1)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/slow"
        set_cursor(platform, "trickle", "7")
        puller = make_puller(Source("trickle", url, "order", "since"), deadline_s=1.0)
        [result] = puller.pull_all(EVENT_TIME)
    finally:
        stop.set()
        server.shutdown()
        server.server_close()

    assert not result.ok
    assert "within its deadline" in (result.error or "")
    assert cursor_of(platform, "trickle") == "7"


def test_sources_reached_with_no_time_left_in_the_invocation_are_not_started(
    platform: Platform, make_puller: Callable[..., Puller], http_source: tuple[str, FakeSource]
) -> None:
    url, fake = http_source
    # The invocation's time is up (an earlier source used it).
    results = make_puller(Source("late", url, "order", "since")).pull_all(EVENT_TIME, 0)

    assert [(r.ok, r.error) for r in results] == [(False, "late: no time left in this invocation")]
    assert fake.requests == []
