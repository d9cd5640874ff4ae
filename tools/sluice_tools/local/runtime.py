"""The local runtime: moto as the control plane, this process as Lambda's data plane.

`LocalRuntime.start()` starts moto, deploys the stage with the same `sluice deploy` as for
AWS, reads back what was deployed and delivers events to worker processes running the
deployed zips. `wait_drained()` tells when nothing is left to do.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice_tools.local import apifaults, delivery, eventbridge, iam, persist, visibility
from sluice_tools.local.apifaults import ApiFaultPlan
from sluice_tools.local.emulator import ACCOUNT_ID, DEFAULT_REGION, Emulator, client
from sluice_tools.local.faults import FaultPlan
from sluice_tools.local.pool import CodeStore, FunctionPool, worker_spec
from sluice_tools.local.schedule import period_seconds
from sluice_tools.local.topology import (
    DEFAULT_CONCURRENCY,
    FunctionSpec,
    Topology,
    deployed_fingerprint,
    read_topology,
)
from sluice_tools.motocompat import server

log = logging.getLogger("sluice.local")
INTERNAL_SUFFIX = "-rt-"  # internal queues: <function>-rt-<kind>
INTERNAL_ID_PREFIX = "sluice-rt-"  # ids of the S3 queue configurations the runtime adds
DRAIN_SETTLE_S = 0.5
LOCAL_FAILED_VISIBILITY_S = 2
MOTO_STATE = "moto-state.pickle"


@dataclass
class Options:
    stage: str = "local"
    port: int = 0
    state_dir: Path = field(default_factory=lambda: Path(".sluice") / "local")
    root: Path | None = None  # the repository (default: found from the cwd)
    console: bool = True  # function logs on stderr as well as in their log files
    isolate: bool = True  # workers see only the zip and the Lambda runtime's packages
    visibility_timeout_s: int | None = None  # override for SQS mappings (tests)
    # A failed SQS batch's messages are visible again after this, not after the queue's
    # visibility timeout (6 x the function's: minutes on AWS): a message that always fails
    # reaches its DLQ in seconds. None: the queue's own, as on AWS.
    failed_visibility_s: int | None = LOCAL_FAILED_VISIBILITY_S
    async_retry_delays_s: tuple[float, ...] = (1.0, 2.0)  # Lambda: about 1 and 2 minutes
    prefix: str | None = None  # resource prefix (None: SLUICE_RESOURCE_PREFIX, else sluice)
    region: str | None = None  # the emulator's (None: AWS_REGION, AWS_DEFAULT_REGION, us-east-1)
    persist: bool = False  # restore the state saved under state_dir at start, save it at stop
    fresh: bool = False  # with persist: ignore (and replace) the saved state
    # Without persist (`local run`): start from moto's state as the last verified deploy of
    # this same source left it, else deploy and keep that state (persist.save_deployed).
    reuse_deploy: bool = False
    watch_s: float | None = None  # look for deploys into the emulator this often (reload)
    schedules: bool = True
    deploy: bool = True
    faults: FaultPlan = field(default_factory=FaultPlan.from_env)  # before the handler runs
    # At the emulator, on the functions' own AWS calls (apifaults.py; `SLUICE_API_FAULTS`).
    api_faults: ApiFaultPlan = field(default_factory=ApiFaultPlan.from_env)
    extra_env: dict[str, str] = field(default_factory=dict)  # given to every function
    # After the deploy the emulator enforces IAM: each function (and its SQS mappings) calls
    # with its own role's credentials and is refused what its policies do not grant
    # (iam.py). Only with `deploy`: tests that build toy functions by hand run as before.
    enforce_iam: bool = True


Say = Callable[[str], None]


class LocalRuntime:
    """The whole pipeline on one machine. Use as a context manager or start()/stop()."""

    def __init__(self, options: Options | None = None, say: Say | None = None) -> None:
        self.options = options or Options()
        self.say: Say = say or (lambda _line: None)
        self.emulator = Emulator(port=self.options.port, region=target_region(self.options.region))
        self.activity = delivery.Activity()
        self.topology = Topology()
        self.pools: dict[str, FunctionPool] = {}
        self.pollers: list[delivery.Poller] = []
        self.watched: dict[str, str] = {}  # queue url → what consumes it
        self.internal: dict[tuple[str, str], str] = {}  # (function, kind) → internal queue url
        self._stop = threading.Event()
        self._scheduler: delivery.Scheduler | None = None
        self._clients: dict[str, Any] = {}
        self._thresholds: tuple[int, int, int] | None = None
        self._saved_env: dict[str, str | None] = {}
        self._code: CodeStore | None = None
        self.deploy_report: Any = None
        self.prefix = self.options.prefix or os.environ.get("SLUICE_RESOURCE_PREFIX") or "sluice"
        self.restored: persist.Saved | None = None  # the saved state start() put back
        self.deploy_skipped = False  # the restored state was deployed from this same source
        self._deployed_hash = ""  # what the emulator's stage was deployed from, once it was
        self._serving = False
        self.source_hash = ""
        self._running: dict[tuple[str, str], tuple[delivery.Poller, Any]] = {}
        self._wanted: set[tuple[str, str]] = set()
        self._scheduled: list[Any] = []
        self._watcher: threading.Thread | None = None
        self._reload_lock = threading.Lock()
        self._previous = Topology()  # what the take-over before the last one read
        self._changes: list[str] = []
        self._reloading = False

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LocalRuntime:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return self.emulator.endpoint

    @property
    def names(self) -> Any:
        from sluice.config import ResourceNames

        return ResourceNames(stage=self.options.stage, prefix=self.prefix)

    def client(self, service: str) -> Any:
        found = self._clients.get(service)
        if found is None:
            found = self._clients[service] = client(service, self.endpoint, self.emulator.region)
        return found

    def start(self) -> None:
        started = time.monotonic()
        state = self.options.state_dir
        state.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(state / "logs", ignore_errors=True)  # each run's logs start empty
        self.say("starting moto on loopback ...")
        apifaults.use(self.options.api_faults)
        endpoint = self.emulator.start()
        self._serving = True
        visibility.track()
        server.route_event_targets(
            eventbridge.TargetRouter(lambda fn: internal_queue_name(fn, eventbridge.KIND))
        )
        self.say(f"moto is listening on {endpoint}")
        self._use_emulator_env()
        if self.options.persist:
            self._restore()
        if self.options.deploy:
            self.source_hash = self._source_hash()
            if self.options.reuse_deploy and not self.options.persist:
                self._restore_deployed()
            if self.restored is not None and self.restored.source_hash == self.source_hash:
                self.deploy_skipped = True
                self.say("deploy skipped: nothing changed since the saved state was deployed")
            else:
                self.say(f"deploying stage {self.options.stage!r} (sluice deploy) ...")
                self.deploy_report = self._deploy()
                if self.options.reuse_deploy and not self.options.persist:
                    self._save_deployed()
            self._deployed_hash = self.source_hash
        self._enforce_iam()
        self.take_over()
        if self.options.watch_s:
            self._watcher = threading.Thread(target=self._watch, name="reload", daemon=True)
            self._watcher.start()
        self._thresholds = settle_collector()
        self.say(f"runtime ready in {time.monotonic() - started:.1f} s")

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:  # no reload half done while the rest stops
            self._watcher.join(60)
        for poller in self.pollers:
            poller.stop.set()
        if self._scheduler is not None:
            self._scheduler.stop.set()
        for pool in self.pools.values():
            pool.stop()
        server.cut_long_polls(True)  # a poller's receive answers now, not after its 2 s wait
        try:
            for poller in self.pollers:
                poller.join(delivery.POLL_WAIT_S + 3)
        finally:
            server.cut_long_polls(False)
        if self._scheduler is not None:
            self._scheduler.join(2)
        if self.options.persist and self._serving:
            self._save()
        self._serving = False
        visibility.untrack()
        server.route_event_targets(None)
        self.emulator.stop()
        if apifaults.in_force() is self.options.api_faults:
            apifaults.use(None)
        self._restore_env()
        if self._thresholds is not None:
            gc.unfreeze()
            gc.set_threshold(*self._thresholds)
            self._thresholds = None

    def _use_emulator_env(self) -> None:
        """Tools called in-process (deploy, ledger) find moto through the environment."""
        env = {
            **self.emulator.env(),
            "SLUICE_STAGE": self.options.stage,
            "SLUICE_RESOURCE_PREFIX": self.prefix,
        }
        for key, value in env.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        from sluice import aws
        from sluice.config import reset_settings

        aws.reset_clients()
        reset_settings()

    def _restore_env(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()

    # ------------------------------------------------------------------ saved state

    @property
    def state_file(self) -> Path:
        return self.options.state_dir / MOTO_STATE

    def _source_hash(self) -> str:
        from sluice_tools.deploy.target import repo_root

        root = self.options.root or repo_root()
        return persist.source_hash(
            root, (self.options.stage, self.prefix, self.emulator.region, ACCOUNT_ID)
        )

    def _restore(self) -> None:
        """Put the state of the last run back into moto (unless `fresh`)."""
        path = self.state_file
        if self.options.fresh:
            if path.exists():
                self.say(f"--fresh: starting clean (the saved state {path} is replaced at stop)")
            return
        try:
            self.restored = persist.load(path)
        except persist.StateError as exc:
            self.say(f"the saved state cannot be used, starting fresh: {exc}")
            self.emulator.reset()
            return
        if self.restored is not None:
            self.say(f"restored the state of the last run from {path}")

    def _restore_deployed(self) -> None:
        try:
            self.restored = persist.load_deployed(self.options.state_dir, self.source_hash)
        except persist.StateError as exc:
            self.say(f"the saved deploy cannot be used, deploying: {exc}")
            self.emulator.reset()

    def _save_deployed(self) -> None:
        if self.deploy_report is None or not self.deploy_report.ok:
            return  # only a deploy doctor passed is worth reusing
        try:
            persist.save_deployed(self.options.state_dir, self.source_hash)
        except Exception as exc:  # the next run deploys again
            self.say(f"could not keep the deployed state: {type(exc).__name__}: {exc}")

    def _save(self) -> None:
        try:
            size = persist.save(self.state_file, self._deployed_hash)
        except Exception as exc:  # a state that cannot be saved costs the next run a deploy
            self.say(f"could not save the emulator's state: {type(exc).__name__}: {exc}")
            return
        self.say(f"saved the emulator's state ({size / 1e6:.1f} MB) to {self.state_file}")

    def _deploy(self) -> Any:
        from sluice_tools.deploy.pipeline import deploy_stage
        from sluice_tools.deploy.target import Target

        target = Target.from_env(self.options.stage, root=self.options.root)
        # Copies of the apps under the state dir: the checkout's .chalice/deployed stays as
        # it is. Unless the emulator's state was restored, it is new, so the copies' deploy
        # state from a last run is stale (chalice would update functions that no longer
        # exist); its zip cache is kept.
        build = self.options.state_dir / "build"
        if self.restored is None:
            for stale in build.glob("**/.chalice/deployed"):
                shutil.rmtree(stale, ignore_errors=True)
        report = deploy_stage(target, build_dir=build, log=self.say)
        if not report.ok:
            self.say("doctor found problems in the deployed stage (see above)")
        return report

    # ------------------------------------------------------------------ data plane

    def take_over(self) -> list[str]:
        """Read what was deployed and start delivering events to it.

        Called again after a deploy into the running emulator (`reload`), it changes only
        what the deploy changed and returns what that was: a changed function's pool runs
        its new code or settings (`FunctionPool.reload`), pollers of new triggers start,
        pollers of removed or changed ones stop (a changed one starts again).
        """
        previous, self._previous = self.topology, self.topology
        self.topology = read_topology(self.client)
        if not self._running:
            for line in self.topology.summary():
                self.say(f"  {line}")
        old_pools, self.pools = self.pools, {}
        self._changes = []
        self._wanted = set()
        self._reloading = bool(self._running)
        self._build_pools()
        self._keep_pools(previous, old_pools)
        sqs = self.client("sqs")
        region = self.emulator.region
        for mapping in self.topology.sqs:
            if not mapping.enabled or mapping.function not in self.pools:
                continue
            url = self._queue_url(mapping.queue_arn)
            self.watched[url] = mapping.function
            self._add(
                delivery.SqsPoller(
                    name=f"sqs:{mapping.function}",
                    pool=self.pools[mapping.function],
                    # Lambda polls with the function's execution role (its policy grants
                    # sqs:ReceiveMessage, DeleteMessage, ...); the operator otherwise.
                    sqs=client(
                        "sqs",
                        self.endpoint,
                        region,
                        credentials=self.pools[mapping.function].spec.environment,
                    )
                    if iam.enforcing()
                    else sqs,
                    queue_url=url,
                    activity=self.activity,
                    stop=self._stop,
                    threads=mapping.maximum_concurrency,
                    mapping=mapping,
                    region=region,
                    visibility_timeout_s=self.options.visibility_timeout_s,
                    failed_visibility_s=self.options.failed_visibility_s,
                    changed=visibility.changed,
                )
            )
        self._take_over_s3()
        self._take_over_sns()
        self._take_over_schedules()
        self._take_over_event_rules()
        for key in [k for k in self._running if k not in self._wanted]:
            poller, _ = self._running.pop(key)
            poller.stop.set()
            self._changes.append(f"{poller.name}: stopped (trigger removed)")
        self.watched = {url: p.pool.spec.function for (_, url), (p, _) in self._running.items()}
        return self._changes

    def _keep_pools(self, previous: Topology, old_pools: dict[str, FunctionPool]) -> None:
        """Keep the pools of unchanged functions; a changed function's pool reloads."""
        for name, pool in old_pools.items():
            fresh = self.pools.get(name)
            if fresh is None:
                pool.stop()
                self._changes.append(f"{name}: removed")
                continue
            was, now = previous.functions.get(name), self.topology.functions[name]
            if was != now:
                what = [
                    field_name
                    for field_name in (
                        "code_sha256",
                        "environment",
                        "timeout_s",
                        "memory_mb",
                        "handler",
                        "role",
                        "on_failure",
                        "maximum_retry_attempts",
                    )
                    if getattr(was, field_name, None) != getattr(now, field_name)
                ]
                pool.reload(fresh.spec)
                label = ", ".join("code" if w == "code_sha256" else w for w in what) or "settings"
                self._changes.append(f"{name}: reloaded ({label})")
            self.pools[name] = pool
        for name in self.pools.keys() - old_pools.keys():
            if old_pools:
                self._changes.append(f"{name}: new function")

    def reload(self) -> list[str]:
        """Apply a deploy made into the running emulator; says and returns what changed."""
        with self._reload_lock:
            changes = self.take_over()
        if changes:
            # Deployed from who knows which tree, or only some apps: the next `up` deploys.
            self._deployed_hash = ""
        for line in changes:
            self.say(f"reloaded: {line}")
        return changes

    def _fingerprint(self) -> str:
        return deployed_fingerprint(self.client)

    def _watch(self) -> None:
        """Reload once what was deployed has changed and held still for one more look."""
        assert self.options.watch_s
        last = pending = self._fingerprint()
        while not self._stop.wait(self.options.watch_s):
            try:
                now = self._fingerprint()
                if now == last or now != pending:
                    pending = now
                    continue
                self.reload()
                last = pending = self._fingerprint()
            except Exception as exc:
                if not self._stop.is_set():
                    self.say(f"reload failed (tried again on the next change): {exc}")
                    log.exception("reload failed")
                    last = pending = ""

    def _enforce_iam(self) -> None:
        """From now on the emulator enforces IAM on every call but the operator's (iam.py)."""
        if self.options.enforce_iam and self.options.deploy:
            iam.enforce(True)
            self.say("IAM is enforced: each function calls with its own role's credentials")

    def _build_pools(self) -> None:
        self._code = CodeStore(self.options.state_dir / "run")
        runtime_dir = self._code.runtime_dir()
        log_dir = self.options.state_dir / "logs"
        concurrency: dict[str, int] = {}
        for m in self.topology.sqs:
            concurrency[m.function] = max(concurrency.get(m.function, 0), m.maximum_concurrency)
        # Each worker appends its spans to one file (sluice.observability.otel; `sluice trace`).
        spans = {"SLUICE_TRACE_FILE": str(self.options.state_dir / "spans.jsonl")}
        env = {**self.emulator.env(), **spans, **self.options.extra_env}
        for name, function in self.topology.functions.items():
            code_dir = self._code.extract(self.emulator.function_zip(name))
            # Lambda gives each instance its execution role's credentials.
            role = (
                iam.assume_function_role(self.client("lambda"), self.client("sts"), name)
                if iam.enforcing()
                else {}
            )
            spec = worker_spec(
                function,
                code_dir=code_dir,
                runtime_dir=runtime_dir,
                environment={**env, **role},
                log_dir=log_dir,
                console=self.options.console,
                isolate=self.options.isolate,
                pycache_dir=self._code.pycache,
            )
            self.pools[name] = FunctionPool(
                spec,
                concurrency.get(name, DEFAULT_CONCURRENCY),
                fault=self.options.faults.decide,
            )
        self._code.prune()

    def _add(self, poller: delivery.Poller) -> None:
        """Start `poller` unless the same one already runs (a reload keeps it running)."""
        key = (poller.name, poller.queue_url)
        signature = self._signature(poller)
        self._wanted.add(key)
        running = self._running.get(key)
        if running is not None and running[1] == signature:
            return
        if running is not None:
            running[0].stop.set()
        poller.stop = threading.Event()  # its own: a reload stops it alone
        self._running[key] = (poller, signature)
        if self._reloading:
            self._changes.append(f"{poller.name}: {'restarted' if running else 'started'}")
        self.pollers.append(poller)
        poller.start()

    def _signature(self, poller: delivery.Poller) -> Any:
        """What a poller delivers with: equal signatures, nothing to restart."""
        if isinstance(poller, delivery.SqsPoller):
            return (
                id(poller.pool),
                poller.mapping,
                poller.threads,
                poller.visibility_timeout_s,
                poller.failed_visibility_s,
            )
        assert isinstance(poller, delivery.AsyncPoller)
        assert poller.function is not None
        kind = poller.name.split(":", 1)[0]
        triggers = getattr(self.topology, {"schedule": "schedules"}.get(kind, kind), [])
        return (
            id(poller.pool),
            poller.function,
            poller.threads,
            poller.retry_delays_s,
            poller.destination_url,
            tuple(t for t in triggers if t.function == poller.function.name),
        )

    def _queue_url(self, arn: str) -> str:
        return str(self.client("sqs").get_queue_url(QueueName=arn.rsplit(":", 1)[-1])["QueueUrl"])

    def _internal_queue(self, function: FunctionSpec, kind: str) -> tuple[str, str]:
        """The runtime's own queue for `function`'s `kind` (s3, sns, schedule) events."""
        found = self.internal.get((function.name, kind))
        sqs = self.client("sqs")
        name = internal_queue_name(function.name, kind)
        attributes = {"VisibilityTimeout": str(function.timeout_s + 60)}
        if found is None:
            try:  # kept from the last run (a restored state) or an earlier take-over
                found = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            except sqs.exceptions.QueueDoesNotExist:
                found = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
            self.internal[(function.name, kind)] = found
            self.watched[found] = function.name
        sqs.set_queue_attributes(QueueUrl=found, Attributes=attributes)  # a new timeout
        arn = sqs.get_queue_attributes(QueueUrl=found, AttributeNames=["QueueArn"])
        return found, arn["Attributes"]["QueueArn"]

    def _async_poller(
        self, function: FunctionSpec, kind: str, url: str, build: delivery.EventBuilder
    ) -> None:
        pool = self.pools[function.name]
        destination = self._queue_url(function.on_failure) if function.on_failure else None
        self._add(
            delivery.AsyncPoller(
                name=f"{kind}:{function.name}",
                pool=pool,
                sqs=self.client("sqs"),
                queue_url=url,
                activity=self.activity,
                stop=self._stop,
                threads=pool.concurrency if kind != "schedule" else 1,
                function=function,
                build=build,
                retry_delays_s=self.options.async_retry_delays_s,
                destination_url=destination,
            )
        )

    def _take_over_s3(self) -> None:
        """Mirror each Lambda notification as a queue notification to an internal queue."""
        s3 = self.client("s3")
        dedupe = delivery.S3Dedupe()
        by_bucket: dict[str, list[Any]] = {}
        for gone in self._previous.s3:  # a bucket whose triggers all went: its queues go
            by_bucket.setdefault(gone.bucket, [])
        for trigger in self.topology.s3:
            by_bucket.setdefault(trigger.bucket, []).append(trigger)
        config_ids: dict[str, str] = {}
        queues: dict[str, str] = {}
        for bucket, triggers in by_bucket.items():
            config = s3.get_bucket_notification_configuration(Bucket=bucket)
            config.pop("ResponseMetadata", None)
            kept = [
                q
                for q in config.get("QueueConfigurations") or []
                if not str(q.get("Id", "")).startswith(INTERNAL_ID_PREFIX)
            ]
            for trigger in triggers:
                function = self.topology.functions[trigger.function]
                url, arn = self._internal_queue(function, "s3")
                queues[function.name] = url
                queue_id = (
                    INTERNAL_ID_PREFIX
                    + hashlib.sha1(f"{bucket}/{trigger.config_id}".encode()).hexdigest()[:12]
                )
                config_ids[queue_id] = trigger.config_id
                entry: dict[str, Any] = {"Id": queue_id, "QueueArn": arn, "Events": trigger.events}
                if trigger.filter:
                    entry["Filter"] = trigger.filter
                kept.append(entry)
            config["QueueConfigurations"] = kept
            s3.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration=config
            )
        for function_name, url in queues.items():
            function = self.topology.functions[function_name]
            self._async_poller(function, "s3", url, delivery.s3_builder(config_ids, dedupe))

    def _take_over_sns(self) -> None:
        """Mirror each Lambda subscription as an SQS one (same filter, SNS envelope kept)."""
        sns = self.client("sns")
        for trigger in self.topology.sns:
            function = self.topology.functions.get(trigger.function)
            if function is None:
                continue
            url, arn = self._internal_queue(function, "sns")
            attributes = {"RawMessageDelivery": "false"}
            if trigger.filter_policy:
                attributes["FilterPolicy"] = trigger.filter_policy
                attributes["FilterPolicyScope"] = trigger.filter_policy_scope or "MessageAttributes"
            existing = [
                s
                for s in sns.list_subscriptions_by_topic(TopicArn=trigger.topic_arn)[
                    "Subscriptions"
                ]
                if s.get("Endpoint") == arn
            ]
            if not existing:
                sns.subscribe(
                    TopicArn=trigger.topic_arn,
                    Protocol="sqs",
                    Endpoint=arn,
                    Attributes=attributes,
                    ReturnSubscriptionArn=True,
                )
            self._async_poller(function, "sns", url, delivery.sns_builder(trigger.subscription_arn))

    def _take_over_schedules(self) -> None:
        entries = []
        for trigger in self.topology.schedules:
            function = self.topology.functions.get(trigger.function)
            if function is None:
                continue
            url, _arn = self._internal_queue(function, "schedule")
            self._async_poller(function, "schedule", url, delivery.schedule_builder)
            period = period_seconds(trigger.expression)
            if self.options.schedules and trigger.enabled and period:
                entries.append((period, url, trigger.rule_arn, self.emulator.region))
        if self._scheduler is not None:
            if self._scheduler.entries == entries:
                return
            self._scheduler.stop.set()
            self._changes.append("schedules: restarted")
        self._scheduler = delivery.Scheduler(self.client("sqs"), threading.Event(), entries)
        self._scheduler.start()

    def _take_over_event_rules(self) -> None:
        """Rules' Lambda targets: moto hands each matched event to `eventbridge.TargetRouter`,
        which queues it on the function's internal queue; invoked from there asynchronously."""
        for function_name in sorted({t.function for t in self.topology.events}):
            function = self.topology.functions.get(function_name)
            if function is None:
                continue
            url, _arn = self._internal_queue(function, eventbridge.KIND)
            self._async_poller(function, eventbridge.KIND, url, delivery.schedule_builder)

    # ------------------------------------------------------------------ operations

    def fire(self, function: str) -> str:
        """Fire `function`'s schedule now (a full function name or its end)."""
        return fire(self.client("sqs"), self.topology, function, self.emulator.region)

    def upload(self, files: Iterable[tuple[Path, str]]) -> list[str]:
        """Put each (path, key) in the landing bucket; returns the keys."""
        s3 = self.client("s3")
        bucket = self.names.landing_bucket
        keys = []
        for path, key in files:
            s3.upload_file(str(path), bucket, key)
            keys.append(key)
        return keys

    def busy_workers(self, function: str | None = None) -> list[int]:
        """Pids of workers in the middle of an invocation (tests kill them)."""
        return [
            pid
            for name, pool in self.pools.items()
            if function is None or name == function or name.endswith(function)
            for pid in pool.busy_pids()
        ]

    def depths(self) -> dict[str, int]:
        """Messages (visible, in flight, delayed) of every queue something consumes."""
        sqs = self.client("sqs")
        out = {}
        for url in list(self.watched):
            attrs = sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
            out[url.rsplit("/", 1)[-1]] = sum(int(v) for v in attrs.values())
        return out

    def drained(self) -> bool:
        """No invocation running and every consumed queue empty, twice in a row unchanged."""
        running, seq = self.activity.snapshot()
        if running or any(self.depths().values()):
            return False
        time.sleep(DRAIN_SETTLE_S)
        running2, seq2 = self.activity.snapshot()
        return running2 == 0 and seq2 == seq and not any(self.depths().values())

    def wait_drained(
        self, timeout_s: float = 600, progress: Callable[[dict[str, int]], None] | None = None
    ) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.drained():
                return True
            if progress is not None:
                progress({k: v for k, v in self.depths().items() if v})
            time.sleep(0.5)
        return False


# The collector's thresholds while the runtime runs: a young generation of 50,000 allocations
# rather than 700 and full collections after 100 young-to-old passes rather than 10 (CPython's
# defaults), see `settle_collector`: 1.0 CPU-s of collections in a 100k run instead of 1.6.
RUNTIME_GC_THRESHOLDS = (50_000, 20, 100)


def settle_collector() -> tuple[int, int, int]:
    """Freeze what the deploy left alive and make full collections rarer; the old thresholds.

    The emulator's process holds all of moto's state: after the deploy (templates, models,
    botocore's service descriptions) and then every item, message and object of the run.
    CPython's full collections walk all of it, every few seconds: ~2.5 CPU-s in a run of 100k
    records, in the one process that answers every AWS call. Frozen, the deploy's objects
    are never walked again; with full collections ten times rarer, the run's took ~0.7 s.
    Garbage in reference cycles waits longer to be freed, which a local run can afford.
    """
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*RUNTIME_GC_THRESHOLDS)
    return previous


def target_region(region: str | None = None) -> str:
    """The region of a local run: given, else AWS_REGION, AWS_DEFAULT_REGION, us-east-1."""
    return (
        region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or DEFAULT_REGION
    )


def internal_queue_name(function: str, kind: str) -> str:
    name = f"{function}{INTERNAL_SUFFIX}{kind}"
    if len(name) > 80:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{function[: 80 - len(kind) - 14]}-{digest}{INTERNAL_SUFFIX}{kind}"
    return name


def fire(sqs: Any, topology: Topology, function: str, region: str) -> str:
    """Queue one scheduled event for the function whose name is (or ends with) `function`."""
    from sluice_tools.local.events import scheduled_event

    matches = [t for t in topology.schedules if t.function == function]
    matches = matches or [t for t in topology.schedules if t.function.endswith(function)]
    if not matches:
        known = ", ".join(sorted({t.function for t in topology.schedules})) or "none"
        raise LookupError(f"no schedule targets {function!r} (scheduled functions: {known})")
    trigger = matches[0]
    url = sqs.get_queue_url(QueueName=internal_queue_name(trigger.function, "schedule"))
    body = json.dumps(scheduled_event(trigger.rule_arn, region))
    sqs.send_message(QueueUrl=url["QueueUrl"], MessageBody=body)
    return trigger.function
