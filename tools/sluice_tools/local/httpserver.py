"""A small HTTP/1.1 server with keep-alive connections, for moto's WSGI application.

moto's own server is werkzeug's development server, which closes the connection after every
response (`Connection: close`). Every AWS call of every worker and poller then opens a new
TCP connection and the server starts a new thread for it: in a local run of 100k records that
is tens of thousands of connections, threads and request parses, all under the emulator's one
GIL. Here a connection lives as long as the client keeps it (botocore pools them), with one
thread per connection, and a request costs a header parse and one `sendall`.

It serves exactly what moto's server would: the same WSGI application
(`DomainDispatcherApplication(create_backend_app)`), an environ built as werkzeug and moto's
request handler build it (percent-decoded `PATH_INFO`, `RAW_URI` as sent, headers with an
underscore dropped except S3 metadata, whose spelling is kept), `Expect: 100-continue`
answered, and chunked request bodies read. It is for loopback use by the local runtime: no
TLS, no pipelining beyond request-after-request, and limits meant to refuse garbage rather
than to face the internet.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

log = logging.getLogger("sluice.local")

MAX_LINE = 65536
MAX_HEADERS = 200
IDLE_TIMEOUT_S = 300.0

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_REASONS = {
    400: "Bad Request",
    411: "Length Required",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


class BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _wsgi_str(value: str) -> str:
    """A decoded URL part as WSGI wants it: its UTF-8 bytes, each as one latin-1 character."""
    return value.encode("utf-8", "surrogateescape").decode("latin-1")


def _read_headers(rfile: Any) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    while True:
        line = rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise BadRequest(431, "header line too long")
        if line in (b"\r\n", b"\n", b""):
            return headers
        if len(headers) >= MAX_HEADERS:
            raise BadRequest(431, "too many headers")
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(400, f"malformed header line {line[:80]!r}")
        headers.append((name, value.strip()))


def _read_chunked(rfile: Any) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = rfile.readline(MAX_LINE + 1)
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadRequest(400, "malformed chunk size") from None
        if size == 0:
            while rfile.readline(MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                pass  # trailers: dropped
            return b"".join(parts)
        data = rfile.read(size)
        if len(data) != size:
            raise BadRequest(400, "truncated chunk")
        parts.append(data)
        rfile.readline(MAX_LINE + 1)


class KeepAliveServer:
    """Serve a WSGI application on `host:port` (port 0: any free one) until `stop`."""

    def __init__(self, app: WSGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self._sock = socket.create_server((host, port), backlog=256)
        self.host, self.port = self._sock.getsockname()[:2]
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.accepted = 0  # connections accepted so far
        self.requests = 0  # requests answered so far

    def start(self) -> None:
        self._thread = threading.Thread(target=self._accept, name="emulator-accept", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, address = self._sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._connections.add(conn)
                self.accepted += 1
            threading.Thread(
                target=self._serve, args=(conn, address), name="emulator-conn", daemon=True
            ).start()

    def _serve(self, conn: socket.socket, address: tuple[str, int]) -> None:
        conn.settimeout(IDLE_TIMEOUT_S)
        rfile = conn.makefile("rb", buffering=65536)
        try:
            while not self._stopping.is_set():
                if not self._one_request(conn, rfile, address):
                    return
        except (OSError, ValueError):
            return  # the client went away (or idled out)
        finally:
            with self._lock:
                self._connections.discard(conn)
            with contextlib.suppress(OSError):
                rfile.close()
                conn.close()

    def _one_request(self, conn: socket.socket, rfile: Any, address: tuple[str, int]) -> bool:
        """Serve one request; False when the connection is to close."""
        line = rfile.readline(MAX_LINE + 1)
        if not line:
            return False
        if line in (b"\r\n", b"\n"):
            return True  # a stray CRLF between requests is allowed (RFC 9112 2.2)
        try:
            parts = line.decode("latin-1").split()
            if len(parts) != 3:
                raise BadRequest(400, f"malformed request line {line[:80]!r}")
            method, target, version = parts
            if not version.startswith("HTTP/1."):
                raise BadRequest(400, f"unsupported protocol {version!r}")
            headers = _read_headers(rfile)
            environ = self._environ(method, target, version, headers, address)
            if environ.get("HTTP_EXPECT", "").lower() == "100-continue":
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
                body = _read_chunked(rfile)
                environ["CONTENT_LENGTH"] = str(len(body))
                del environ["HTTP_TRANSFER_ENCODING"]
            else:
                length = environ.get("CONTENT_LENGTH", "")
                try:
                    size = int(length) if length else 0
                except ValueError:
                    raise BadRequest(400, f"bad Content-Length {length!r}") from None
                if size < 0:
                    raise BadRequest(400, f"bad Content-Length {length!r}")
                body = rfile.read(size) if size else b""
                if len(body) != size:
                    return False
        except BadRequest as error:
            self._send_error(conn, error.status, str(error))
            return False
        environ["wsgi.input"] = io.BytesIO(body)
        keep = self._keep_alive(version, environ.get("HTTP_CONNECTION", ""))
        conn.sendall(self._respond(environ, keep))
        with self._lock:
            self.requests += 1
        return keep

    @staticmethod
    def _keep_alive(version: str, connection: str) -> bool:
        tokens = {t.strip().lower() for t in connection.split(",")}
        if version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens

    def _environ(
        self,
        method: str,
        target: str,
        version: str,
        headers: list[tuple[str, str]],
        address: tuple[str, int],
    ) -> dict[str, Any]:
        from moto.core.request import (
            PRESERVED_HEADER_NAMES_ENVIRON_KEY,
            environ_key_for_header,
            should_preserve_original_header_name,
        )

        path, _, query = target.partition("?")
        if "://" in path:  # an absolute-form target: the host is in it
            after = path.split("://", 1)[1]
            host, slash, rest = after.partition("/")
            path = slash + rest
        else:
            host = ""
        environ: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "SERVER_SOFTWARE": "sluice-emulator",
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": _wsgi_str(unquote(path, errors="surrogateescape")),
            "QUERY_STRING": _wsgi_str(query),
            "REQUEST_URI": _wsgi_str(target),
            "RAW_URI": _wsgi_str(target),
            "REMOTE_ADDR": address[0],
            "REMOTE_PORT": address[1],
            "SERVER_NAME": self.host,
            "SERVER_PORT": str(self.port),
            "SERVER_PROTOCOL": version,
        }
        preserved: dict[str, str] = {}
        underscored: list[tuple[str, str]] = []
        for name, value in headers:
            if "_" in name:
                if should_preserve_original_header_name(name):
                    underscored.append((name, value))
                continue
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
                if key in environ:
                    value = f"{environ[key]},{value}"
            environ[key] = value
        for name, value in underscored:
            key = environ_key_for_header(name)
            if key in environ and key not in preserved:
                continue  # never let an underscored header stand in for a dashed one
            preserved.setdefault(key, name)
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        environ[PRESERVED_HEADER_NAMES_ENVIRON_KEY] = preserved
        if host:
            environ["HTTP_HOST"] = host
        return environ

    def _respond(self, environ: dict[str, Any], keep: bool) -> bytes:
        started: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            if exc_info and started:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [status, headers]
            return lambda data: chunks.append(data)

        chunks: list[bytes] = []
        try:
            result = self.app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Exception:
            started.clear()
            log.exception("emulator: %s %s failed", environ["REQUEST_METHOD"], environ["RAW_URI"])
        if not started:
            started[:] = ["500 Internal Server Error", [("Content-Type", "text/plain")]]
            chunks = [b"internal error in the emulator"]
        status, headers = started
        body = b"".join(chunks)
        lines = [f"HTTP/1.1 {status}"]
        has_length = False
        for name, value in headers:
            lower = name.lower()
            if lower == "content-length":
                has_length = True
            elif lower in ("connection", "transfer-encoding"):
                continue
            lines.append(f"{name}: {value}")
        if not has_length:
            code = int(status.split(None, 1)[0])
            if environ["REQUEST_METHOD"] != "HEAD" and not (
                100 <= code < 200 or code in (204, 304)
            ):
                lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: keep-alive" if keep else "Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if environ["REQUEST_METHOD"] == "HEAD":
            return head
        return head + body

    def _send_error(self, conn: socket.socket, status: int, reason: str) -> None:
        body = reason.encode("utf-8", "replace")
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        with contextlib.suppress(OSError):
            conn.sendall(head.encode("latin-1") + body)
