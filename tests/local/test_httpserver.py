"""The emulator's HTTP server: keep-alive connections; requests read as moto's server reads them."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from support.waiting import wait_until

from sluice_tools.local.emulator import Emulator, client
from sluice_tools.local.httpserver import KeepAliveServer


def echo_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answers with what it was given: the environ's strings and the body."""
    body = environ["wsgi.input"].read()
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("the application failed")
    seen = {k: v for k, v in environ.items() if isinstance(v, str)}
    seen["body"] = body.decode("latin-1")
    payload = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [payload[:10], payload[10:]]


@pytest.fixture
def server() -> Iterator[KeepAliveServer]:
    srv = KeepAliveServer(echo_app)
    srv.start()
    yield srv
    srv.stop()


def read_response(sock: socket.socket) -> tuple[str, dict[str, str], bytes]:
    """One response off the socket (status line, headers, Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a response"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        rest += sock.recv(65536)
    assert len(rest) == length, "more bytes than the response declared"
    return status, headers, rest


def connect(srv: KeepAliveServer) -> socket.socket:
    return socket.create_connection((srv.host, srv.port), timeout=5)


def test_a_connection_serves_request_after_request(server: KeepAliveServer) -> None:
    with connect(server) as sock:
        for i in range(3):
            body = f"body {i}".encode()
            sock.sendall(
                b"POST /q HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            status, headers, payload = read_response(sock)
            assert status == "HTTP/1.1 200 OK"
            assert headers["connection"] == "keep-alive"
            assert json.loads(payload)["body"] == f"body {i}"
    assert server.accepted == 1
    # Counted once the answer is written: the third may still be in the server's thread.
    wait_until(lambda: server.requests >= 3, what="the server to count its third answer")
    assert server.requests == 3


def test_connection_close_is_honoured(server: KeepAliveServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        _, headers, _ = read_response(sock)
        assert headers["connection"] == "close"
        assert sock.recv(10) == b""  # the server closed its end
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")  # HTTP/1.0 closes unless asked otherwise
        _, headers, _ = read_response(sock)
        assert headers["connection"] == "close"


def test_request_is_read_as_werkzeug_and_moto_read_it(server: KeepAliveServer) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"PUT /bkt/we%20ird/k%C3%A9%2By%252F.json?tagging&x=a%20b HTTP/1.1\r\n"
            b"Host: bkt.local:1\r\nContent-Type: text/plain\r\nX-Amz-Meta-my_key: kept\r\n"
            b"X_Forwarded: dropped\r\nX-Twice: 1\r\nX-Twice: 2\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\n\r\n"
        )
        status, _, payload = read_response(sock)
    seen = json.loads(payload)
    assert status == "HTTP/1.1 200 OK"
    # PATH_INFO is decoded once (%25 → %), as UTF-8 bytes in latin-1; RAW_URI is as sent.
    assert seen["PATH_INFO"].encode("latin-1").decode() == "/bkt/we ird/ké+y%2F.json"
    assert seen["RAW_URI"] == "/bkt/we%20ird/k%C3%A9%2By%252F.json?tagging&x=a%20b"
    assert seen["QUERY_STRING"] == "tagging&x=a%20b"
    assert seen["HTTP_HOST"] == "bkt.local:1"
    assert seen["CONTENT_TYPE"] == "text/plain"
    assert seen["HTTP_X_AMZ_META_MY_KEY"] == "kept"  # S3 metadata keeps its underscore
    assert "HTTP_X_FORWARDED" not in seen  # other underscored names are dropped, as werkzeug does
    assert seen["HTTP_X_TWICE"] == "1,2"
    assert seen["body"] == "abcdefg"  # the chunked body, decoded
    assert seen["CONTENT_LENGTH"] == "7"


def test_expect_100_continue_is_answered_before_the_body(server: KeepAliveServer) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"PUT /o HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        _, _, payload = read_response(sock)
    assert json.loads(payload)["body"] == "hello"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NONSENSE\r\n\r\n",
        b"GET / SPDY/3\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_malformed_requests_get_400_and_the_server_goes_on(
    server: KeepAliveServer, request_bytes: bytes
) -> None:
    with connect(server) as sock:
        sock.sendall(request_bytes)
        status, headers, _ = read_response(sock)
        assert status.startswith("HTTP/1.1 400")
        assert headers["connection"] == "close"
    with connect(server) as sock:
        sock.sendall(b"GET /still-up HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == "HTTP/1.1 200 OK"


def test_an_application_error_is_a_500_on_a_connection_that_stays_usable(
    server: KeepAliveServer,
) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == "HTTP/1.1 500 Internal Server Error"
        sock.sendall(b"GET /fine HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == "HTTP/1.1 200 OK"


def test_boto3_clients_reuse_their_connections_to_the_emulator() -> None:
    """The point of the server: calls do not each open a connection (werkzeug's closes all)."""
    emulator = Emulator()
    endpoint = emulator.start()
    try:
        sqs = client("sqs", endpoint)
        s3 = client("s3", endpoint)
        url = sqs.create_queue(QueueName="reuse")["QueueUrl"]
        s3.create_bucket(Bucket="reuse-bucket")
        key = "we ird/ké+y%2F #1.json"
        s3.put_object(Bucket="reuse-bucket", Key=key, Body=b"x" * 200_000, Metadata={"a_b": "1"})
        before = emulator._server.accepted
        for i in range(20):
            sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
        got = s3.get_object(Bucket="reuse-bucket", Key=key)["Body"].read()
        head = s3.head_object(Bucket="reuse-bucket", Key=key)
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket="reuse-bucket")["Contents"]]
        depth = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
        )
        assert emulator._server.accepted == before  # 24 more calls on the connections open
        assert got == b"x" * 200_000
        assert head["Metadata"] == {"a_b": "1"}
        assert head["ContentLength"] == 200_000
        assert listed == [key]
        assert depth["Attributes"]["ApproximateNumberOfMessages"] == "20"
    finally:
        emulator.stop()
