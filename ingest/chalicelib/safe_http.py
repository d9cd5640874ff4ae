"""HTTP GET for scheduled pulls that keeps the source's credential where it belongs.

- Only `https` (plain `http` only to a loopback address, and only when the stage opts in:
  `SLUICE_INGEST_PULL_ALLOW_HTTP_LOOPBACK`, for local runs against a test server).
- The host is resolved once and every address it gives must be public: loopback, private,
  link-local (the instance metadata address 169.254.169.254), multicast and reserved ranges
  are refused. The connection goes to the address that was checked (the name is still used
  for SNI and certificate checks), so a second DNS answer cannot point it elsewhere.
- A redirect is followed only within the same scheme, host and port: the `Authorization`
  header never reaches another origin.
- One deadline for the whole request (connect, headers, body): a source that trickles bytes
  is cut when it passes, not after a socket timeout per read.

Standard library only: no third-party HTTP client in the Lambda.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

READ_BLOCK = 64 * 1024


class UnsafeSourceError(ValueError):
    """The source's URL, address or redirect is refused; the message says why."""


class DeadlineError(TimeoutError):
    """The request did not finish before its deadline."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def _origin(url: str) -> tuple[str, str, int]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    default = 443 if scheme == "https" else 80
    return scheme, (parts.hostname or "").lower(), parts.port or default


def check_url(url: str, *, allow_http_loopback: bool) -> None:
    """Refuse a URL whose scheme is not https (or http to loopback when allowed)."""
    scheme, host, _ = _origin(url)
    if scheme not in {"https", "http"} or (scheme == "http" and not allow_http_loopback):
        why = " (plain http only to loopback, in local mode)" if scheme == "http" else ""
        raise UnsafeSourceError(f"scheme {scheme or '(none)'!r} refused: use https{why}")
    if not host:
        raise UnsafeSourceError(f"{url!r} has no host")


def vetted_address(url: str, *, allow_http_loopback: bool) -> str:
    """The address to connect to: every address the host resolves to must be acceptable."""
    scheme, host, port = _origin(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UnsafeSourceError(f"cannot resolve {host!r}: {exc}") from None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise UnsafeSourceError(f"{host!r} resolves to no address")
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if scheme == "http":
            if not ip.is_loopback:
                raise UnsafeSourceError(
                    f"plain http to {host!r} ({ip}) refused: only loopback may use http"
                )
            continue
        if not ip.is_global or ip.is_multicast:
            raise UnsafeSourceError(
                f"{host!r} resolves to {ip}, a non-public address (private, loopback, "
                "link-local or reserved): refused"
            )
    return addresses[0]


def _pinned(base: type[http.client.HTTPConnection], address: str) -> Any:
    """A connection class for `base` that connects to `address` whatever the host name says."""

    class Pinned(base):  # type: ignore[valid-type,misc]
        def connect(self) -> None:
            sock = socket.create_connection((address, self.port), self.timeout)
            if isinstance(self, http.client.HTTPSConnection):
                context: ssl.SSLContext = self._context
                sock = context.wrap_socket(sock, server_hostname=self.host)
            self.sock = sock

    return Pinned


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if _origin(newurl) != _origin(req.full_url):
            raise UnsafeSourceError(
                f"redirect from {_origin(req.full_url)[1]} to another origin refused: {newurl}"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Handler(urllib.request.HTTPSHandler):
    def __init__(self, address: str) -> None:
        super().__init__(context=ssl.create_default_context())
        self._address = address

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(
            _pinned(http.client.HTTPSConnection, self._address),
            req,
            context=self._context,  # type: ignore[attr-defined]
        )

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_pinned(http.client.HTTPConnection, self._address), req)


def get(
    url: str,
    headers: dict[str, str],
    *,
    deadline: float,
    max_bytes: int,
    read_timeout_s: float,
    allow_http_loopback: bool = False,
) -> Answer:
    """GET `url` and read at most `max_bytes + 1` bytes, all before `deadline` (monotonic).

    Raises UnsafeSourceError, DeadlineError, urllib.error.HTTPError or OSError.
    """
    check_url(url, allow_http_loopback=allow_http_loopback)
    address = vetted_address(url, allow_http_loopback=allow_http_loopback)
    opener = urllib.request.OpenerDirector()
    for handler in (
        _Handler(address),
        _SameOriginRedirects(),
        urllib.request.HTTPErrorProcessor(),
        urllib.request.HTTPDefaultErrorHandler(),
    ):
        opener.add_handler(handler)
    request = urllib.request.Request(url, headers=headers, method="GET")
    with opener.open(request, timeout=_left(deadline, read_timeout_s)) as response:
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            sock = getattr(getattr(response, "fp", None), "raw", None)
            sock = getattr(sock, "_sock", None)
            if sock is not None:
                sock.settimeout(_left(deadline, read_timeout_s))
            # read1: what one receive gives, so the deadline is checked as bytes trickle in
            try:
                block = response.read1(min(READ_BLOCK, max_bytes + 1 - size))
            except TimeoutError:
                _left(deadline, read_timeout_s)  # DeadlineError if that is why
                raise
            if not block:
                break
            chunks.append(block)
            size += len(block)
            _left(deadline, read_timeout_s)
        return Answer(getattr(response, "status", 200), response.headers, b"".join(chunks))


def _left(deadline: float, cap_s: float) -> float:
    """Seconds left before `deadline`, at most `cap_s`; DeadlineError when none is."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineError("deadline passed before the source finished answering")
    return min(left, cap_s)
