"""The app's wiring: each handler reaches chalicelib through Chalice, with the test stage's env."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING
from urllib.parse import quote_plus

import pytest
from ingest_support import Platform

from sluice import aws

if TYPE_CHECKING:
    from chalice.test import Client

APP_DIR = Path(__file__).resolve().parents[2] / "ingest"
ORDERS = [{"order_id": "o-1", "amount": 12.5}, {"order_id": "o-2", "amount": 7}]


@pytest.fixture
def client(platform: Platform, app_module: ModuleType, tmp_path: Path) -> Iterator[Client]:
    from chalice.test import Client

    # The test stage's environment, as `sluice deploy` renders it from ingest/deploy.yaml
    # (sluice_tools: not in app_tests' venv, skipped there).
    render = pytest.importorskip("sluice_tools.deploy.render")
    project = render.write_project_dir(APP_DIR, "test", tmp_path / "ingest")
    with Client(app_module.app, stage_name="test", project_dir=str(project)) as c:
        yield c


@pytest.fixture
def orders_source() -> Iterator[tuple[str, list[str]]]:
    """An HTTP source on loopback: every GET gets two orders and the next cursor `c-2`.

    Yields its URL and the paths it was asked for.
    """
    asked: list[str] = []
    body = json.dumps({"records": ORDERS, "next_cursor": "c-2"}).encode()

    class Source(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass  # no request lines in the test output

    server = ThreadingHTTPServer(("127.0.0.1", 0), Source)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/orders", asked
    finally:
        server.shutdown()
        server.server_close()


def test_an_s3_event_through_chalice_sends_the_objects_records(
    platform: Platform, client: Client
) -> None:
    key = "incoming/order/wired file.jsonl"
    put = platform.put(key, b'{"id": 1}\n{"id": 2}\n')
    event = client.events.generate_s3_event(bucket=platform.names.landing_bucket, key=key)
    obj = event["Records"][0]["s3"]["object"]
    obj["key"] = quote_plus(key)  # as S3 sends it; Chalice's generator does not encode
    obj["eTag"] = put["Records"][0]["s3"]["object"]["eTag"]

    response = client.lambda_.invoke("on_object_created", event)

    assert response.payload == {"objects": 1, "duplicates": 0}
    [chunk] = platform.raw_chunks()
    assert [r.payload for r in chunk.records] == [{"id": 1}, {"id": 2}]
    assert chunk.source == f"s3://{platform.names.landing_bucket}/{key}"


def test_a_continuation_message_through_chalice_finishes_the_object(
    platform: Platform, client: Client
) -> None:
    from chalicelib.checkpoint import Checkpoint
    from chalicelib.objects import ObjectRef

    put = platform.put("incoming/order/rest.jsonl", b'{"id": 0}\n{"id": 1}\n{"id": 2}\n')
    ref = ObjectRef(
        platform.names.landing_bucket,
        "incoming/order/rest.jsonl",
        put["Records"][0]["s3"]["object"]["eTag"],
    )
    checkpoint = Checkpoint(
        bucket=ref.bucket,
        key=ref.key,
        etag=ref.etag,
        version_id=None,
        record_type="order",
        format="jsonl",
        gzip=False,
        correlation_id=ref.correlation_id,
        ingested_at="2026-11-27T06:00:00.000Z",
        offset=len(b'{"id": 0}\n'),
        next_ordinal=1,
        next_chunk=1,
    )
    event = client.events.generate_sqs_event(
        queue_name=platform.names.ingest_continue_queue, message_bodies=[checkpoint.encode()]
    )

    response = client.lambda_.invoke("on_continue", event)

    assert response.payload == {"batchItemFailures": []}
    [chunk] = platform.raw_chunks()
    assert [(r.ordinal, r.payload) for r in chunk.records] == [(1, {"id": 1}), (2, {"id": 2})]


def test_the_schedule_through_chalice_lands_what_each_enabled_source_returned(
    platform: Platform,
    client: Client,
    orders_source: tuple[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chalicelib import pull

    url, asked = orders_source
    sources = [
        pull.Source("shop", url, "order", "since"),
        pull.Source("paused", f"{url}/paused", "order", "since", enabled=False),
    ]
    monkeypatch.setattr(pull, "load_sources", lambda: sources)  # instead of sources.json
    # The test source is plain http on loopback, which only this opt-in allows.
    monkeypatch.setenv("SLUICE_INGEST_PULL_ALLOW_HTTP_LOOPBACK", "true")
    event = client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
    )

    response = client.lambda_.invoke("pull_sources", event)

    [pulled] = response.payload["pulled"]
    assert (pulled["source"], pulled["ok"], pulled["records"]) == ("shop", True, 2)
    assert pulled["cursor"] == "c-2"
    assert asked == ["/orders"]  # from the start (no cursor yet); the paused source never
    s3 = aws.s3()
    landed = s3.get_object(Bucket=platform.names.landing_bucket, Key=pulled["key"])
    assert [json.loads(line) for line in landed["Body"].read().splitlines()] == ORDERS
    assert pulled["key"].startswith("incoming/order/pulls/shop/")


def test_the_scheduled_check_of_open_objects_runs_through_chalice(
    platform: Platform, client: Client
) -> None:
    from test_check_objects import T0, bus_to_queue, delivered_object, received, writer

    from sluice.events import DELIVERED, LANDED, QUARANTINED

    delivered_object(writer([T0]), "corr-app")  # its emission failed: no bus yet
    url = bus_to_queue(platform)
    event = client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
    )

    response = client.lambda_.invoke("check_objects", event)

    assert response.payload["delivered"] == 1
    assert sorted(e["detail-type"] for e in received(url)) == sorted(
        [LANDED, DELIVERED, QUARANTINED]
    )


@pytest.mark.parametrize("stage", ["dev", "prod", "local", "test", "qa7"])
def test_the_config_gives_every_stage_its_env_and_every_function_its_policy(stage: str) -> None:
    render = pytest.importorskip("sluice_tools.deploy.render")  # not in app_tests' venv
    rendered = render.render_for(APP_DIR, stage, prefix="acme-data")
    config = rendered.config
    assert config["app_name"] == "sluice-ingest"
    assert config["autogen_policy"] is False
    settings = config["stages"][stage]
    for function in ("on_object_created", "on_continue", "pull_sources", "check_objects"):
        env = rendered.environment(function)
        assert (env["SLUICE_STAGE"], env["SLUICE_RESOURCE_PREFIX"]) == (stage, "acme-data")
        assert not any("TYPES" in name for name in env)  # the registry says, not a setting
        policy_file = settings["lambda_functions"][function]["iam_policy_file"]
        assert policy_file == f"policy-{stage}-{function}.json"
        policy = rendered.policies[function]
        resources = [r for s in policy["Statement"] for r in s["Resource"]]
        stars = [s for s in policy["Statement"] if "*" in s["Resource"]]
        assert all(a.startswith("xray:") for s in stars for a in s["Action"])
        scoped = (
            f"acme-data-{stage}-",
            f"sluice-ingest-{stage}-",
            f":parameter/acme-data/{stage}/pull/",
        )
        assert all(r == "*" or any(part in r for part in scoped) for r in resources)
