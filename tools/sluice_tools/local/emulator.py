"""moto's server on loopback, in this process, with moto's own Lambda invocations switched off.

moto is the control plane only: the local runtime delivers every event itself, so moto must
not receive from queues with a mapping, nor "invoke" functions for S3 and SNS (see `quiet`).
"""

from __future__ import annotations

import contextlib
import logging
import urllib.request
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sluice_tools.motocompat.server import backend_app, quiet, unquiet

ACCOUNT_ID = "123456789012"  # moto's default account
DEFAULT_REGION = "us-east-1"
# The operator's credentials: tooling, tests, the deploy, the runtime's own bookkeeping and the
# `aws` CLI. Once the runtime enforces IAM (`iam.py`) this key is allowed everything (the
# account's admin); functions call with their own role's credentials instead. A well-formed
# access key id (AKIA + 16), as moto and botocore expect of a long-term key.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIASLUICELOCALADMIN",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


@dataclass
class Emulator:
    """moto on 127.0.0.1 (port 0: any free port). State is per process.

    moto's WSGI application is served by `KeepAliveServer` rather than moto's own werkzeug
    server, which closes every connection: same requests, same answers, a fraction of the
    per-request cost (docs/decisions.md). DynamoDB's API calls skip moto's Flask layer
    (`motocompat.server.backend_app`), answered as it answers them.
    """

    port: int = 0
    region: str = DEFAULT_REGION
    _server: Any = field(default=None, repr=False)

    def start(self) -> str:
        """Start the server (once) and return its endpoint URL."""
        if self._server is None:
            from moto.moto_server.werkzeug_app import DomainDispatcherApplication

            from sluice_tools.local import apifaults, iam
            from sluice_tools.local.httpserver import KeepAliveServer

            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            # "No Moto CloudFormation support for ...": the deploy fills those gaps itself.
            logging.getLogger("moto").setLevel(logging.ERROR)
            warnings.filterwarnings("ignore", message="Tried to parse", category=UserWarning)
            quiet()
            # IAM outermost: a call its role does not allow never reaches the API faults (a
            # "lost answer" or a kill after a call that was refused would be no such thing),
            # nor moto.
            app = iam.middleware(apifaults.middleware(DomainDispatcherApplication(backend_app)))
            self._server = KeepAliveServer(app, host="127.0.0.1", port=self.port)
            self._server.start()
        return self.endpoint

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        return f"http://{self._server.host}:{self._server.port}"

    def reset(self) -> None:
        """Forget every resource (moto's `/moto-api/reset`)."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def stop(self) -> None:
        if self._server is not None:
            # moto's state outlives the server: leave nothing to a later user in this process.
            with contextlib.suppress(OSError):
                self.reset()
            self._server.stop()
            self._server = None
            unquiet()
            from sluice_tools.local import iam

            iam.enforce(False)

    def env(self) -> dict[str, str]:
        """What a process needs to talk to this emulator with boto3 (or the aws CLI)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            **CREDENTIALS,
        }

    def function_zip(self, function_name: str) -> bytes:
        """The deployment package moto holds for a function (the zip `chalice deploy` sent).

        Read in-process: moto's `get_function` gives no downloadable `Code.Location`.
        """
        from moto.awslambda.utils import get_backend

        function = get_backend(ACCOUNT_ID, self.region).get_function(function_name)
        code: bytes = function.code_bytes
        if not code:
            raise LookupError(f"moto holds no zip for {function_name}")
        return code


def client(
    service: str,
    endpoint: str,
    region: str = DEFAULT_REGION,
    credentials: Mapping[str, str] | None = None,
) -> Any:
    """A boto3 client on the emulator (retries for a busy server).

    The operator's credentials unless `credentials` (`AWS_ACCESS_KEY_ID`,
    `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, e.g. a function role's) are given.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=50,
    )
    # `Any`: the stubs overload `client` per literal service name; ours is a plain str.
    creds = CREDENTIALS if credentials is None else credentials
    session: Any = boto3.session.Session(
        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=creds.get("AWS_SESSION_TOKEN"),
        region_name=region,
    )
    return session.client(service, endpoint_url=endpoint, config=config)
