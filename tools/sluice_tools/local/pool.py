"""Worker processes per function, at most its concurrency at once; one invocation per worker.

The parent side of `worker.py`: spawns workers on demand (a real cold start each), enforces the
function's timeout by killing the worker, and turns a dead worker into a failed invocation.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import multiprocessing
import os
import shutil
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import spawn
from pathlib import Path
from typing import Any

from sluice import jsonx
from sluice_tools.local.topology import FunctionSpec
from sluice_tools.local.worker import Request, WorkerSpec, serve

# What Lambda's Python runtime provides besides the deployment package.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")
KILL_GRACE_S = 1.0


@dataclass
class Outcome:
    """The result of one invocation, as Lambda reports it."""

    ok: bool
    payload: Any = None  # the handler's return value (JSON-decoded)
    error: dict[str, Any] | None = None  # errorType, errorMessage, stackTrace
    request_id: str = ""
    duration_ms: float = 0.0  # wall time, as the caller saw it (cold start included)
    cpu_ms: float = 0.0  # CPU time the worker spent on it

    @property
    def function_error(self) -> str | None:
        return None if self.ok else "Unhandled"


class Worker:
    """One worker process: a Lambda instance of one function."""

    def __init__(self, spec: WorkerSpec) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=serve, args=(child, spec), name=f"lambda:{spec.function}", daemon=True
        )
        with _without_main():
            self.process.start()
        child.close()
        if self.process.pid is not None:
            register_worker(self.process.pid, spec.function)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def invoke(self, request: Request, timeout_s: float) -> Outcome:
        try:
            self.conn.send(request)
            if not self.conn.poll(timeout_s + KILL_GRACE_S):
                self.kill()
                return _failure(request, "Sandbox.Timedout", f"Task timed out after {timeout_s} s")
            kind, value, cpu_ms = self.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            self.kill()
            code = self.process.exitcode
            return _failure(
                request, "Runtime.ExitError", f"worker exited (exit code {code}) mid-invocation"
            )
        if kind == "ok":
            try:
                payload = json.loads(value)
            except ValueError:
                return _failure(request, "Runtime.MarshalError", "unreadable response")
            return Outcome(ok=True, payload=payload, request_id=request.request_id, cpu_ms=cpu_ms)
        return Outcome(ok=False, error=value, request_id=request.request_id, cpu_ms=cpu_ms)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


_spawn_lock = threading.Lock()
# pid → function of every worker this process started: the emulator's API faults find the
# function of a call by the pid in its User-Agent (worker.APP_ID_PREFIX). A pid is reused
# only after its worker died, and the next worker with it overwrites the entry.
_worker_functions: dict[int, str] = {}


def register_worker(pid: int, function: str) -> None:
    _worker_functions[pid] = function


def function_of(pid: int) -> str | None:
    """The function whose worker has (or last had) `pid`; None for any other process."""
    return _worker_functions.get(pid)


@contextmanager
def _without_main() -> Iterator[None]:
    """Spawn without re-running the parent's `__main__` in the child.

    multiprocessing's spawn imports the parent's main module (the `sluice` script, pytest, a
    user's script without a `__main__` guard) in the child; a worker needs none of it, and it
    would load the dev environment's packages before the function's own.
    """
    original = spawn.get_preparation_data

    def preparation(name: str) -> dict[str, Any]:
        data = original(name)
        data.pop("init_main_from_name", None)
        data.pop("init_main_from_path", None)
        return data

    with _spawn_lock:
        spawn.get_preparation_data = preparation
        try:
            yield
        finally:
            spawn.get_preparation_data = original


def _failure(request: Request, error_type: str, message: str) -> Outcome:
    return Outcome(
        ok=False,
        error={"errorType": error_type, "errorMessage": message},
        request_id=request.request_id,
    )


Fault = Callable[[str, str], "dict[str, Any] | None"]


class FunctionPool:
    """The instances of one function: at most `concurrency` invocations at a time."""

    def __init__(self, spec: WorkerSpec, concurrency: int, fault: Fault | None = None) -> None:
        self.spec = spec
        self.concurrency = max(1, concurrency)
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._lock = threading.Lock()
        self._idle: list[Worker] = []
        self._busy: dict[int, Worker] = {}
        self._fault = fault
        self._retired: set[int] = set()  # busy workers of an older spec (see `reload`)
        self.invocations = 0
        self.errors = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one unit of the function's concurrency (pollers take it before receiving)."""
        self._slots.acquire()
        try:
            yield
        finally:
            self._slots.release()

    def try_slot(self, timeout_s: float) -> bool:
        return self._slots.acquire(timeout=timeout_s)

    def release_slot(self) -> None:
        self._slots.release()

    def invoke(self, event: Any) -> Outcome:
        """Invoke with `event` (call inside `slot()`); spawns a worker if none is idle."""
        # msgspec: events carry chunks (JSON in JSON strings) of up to 6 MB, which the standard
        # library encodes at half the speed, in the emulator's process.
        event_json = event if isinstance(event, str | bytes) else jsonx.dumps(event)
        fault = None
        if self._fault:
            text = event_json if isinstance(event_json, str) else event_json.decode("utf-8")
            fault = self._fault(self.spec.function, text)
        request = Request(request_id=str(uuid.uuid4()), event=event_json, fault=fault)
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None or not worker.alive:
            worker = Worker(self.spec)
        key = id(worker)
        with self._lock:
            self._busy[key] = worker
        started = time.monotonic()
        try:
            outcome = worker.invoke(request, self.spec.timeout_s)
        finally:
            with self._lock:
                self._busy.pop(key, None)
        outcome.duration_ms = (time.monotonic() - started) * 1000
        with self._lock:
            self.invocations += 1
            if not outcome.ok:
                self.errors += 1
            retired = key in self._retired
            self._retired.discard(key)
            if worker.alive and not retired:  # Lambda keeps an instance after a handled error
                self._idle.append(worker)
        if retired:
            worker.kill()
        return outcome

    def reload(self, spec: WorkerSpec) -> None:
        """New invocations run `spec` (a redeploy); idle workers go now, busy ones when done."""
        with self._lock:
            self.spec = spec
            idle, self._idle = self._idle, []
            self._retired |= set(self._busy)
        for worker in idle:
            worker.kill()

    def busy_pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in self._busy.values() if w.pid is not None]

    def stop(self) -> None:
        with self._lock:
            workers = [*self._idle, *self._busy.values()]
            self._idle.clear()
        for worker in workers:
            worker.kill()


@dataclass
class CodeStore:
    """Deployment zips extracted once each (by content), plus the Lambda runtime's packages."""

    root: Path
    _dirs: dict[str, Path] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def extract(self, code: bytes) -> Path:
        digest = hashlib.sha256(code).hexdigest()[:16]
        with self._lock:
            found = self._dirs.get(digest)
            if found is not None:
                return found
            target = self.root / "code" / digest
            done = self.root / "code" / f"{digest}.complete"
            if not done.is_file():  # extracted by an earlier run: same bytes, same tree
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir(parents=True)
                with zipfile.ZipFile(io.BytesIO(code)) as archive:
                    archive.extractall(target)
                done.touch()
            self._dirs[digest] = target
            return target

    @property
    def pycache(self) -> Path:
        """The workers' bytecode cache (`sys.pycache_prefix`): mirrors the source paths."""
        return self.root / "pycache"

    def prune(self) -> None:
        """Forget extracted zips this run did not use (older deploys), and their bytecode."""
        used = {p.name for p in self._dirs.values()}
        for entry in (self.root / "code").glob("*"):
            if entry.name.split(".")[0] not in used:
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                    compiled = self.pycache / os.path.abspath(entry).lstrip(os.sep)
                    shutil.rmtree(compiled, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    def runtime_dir(self) -> Path:
        """Links to boto3 and what it needs, as the Lambda Python runtime provides them."""
        target = self.root / "runtime"
        with self._lock:
            if target.is_dir():
                return target
            staging = self.root / f"runtime.{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            for name in RUNTIME_PACKAGES:
                spec = importlib.util.find_spec(name)
                if spec is None or spec.origin is None:
                    continue
                origin = Path(spec.origin)
                source = origin.parent if origin.name == "__init__.py" else origin
                os.symlink(source, staging / source.name)
            staging.rename(target)
            return target


def worker_spec(
    function: FunctionSpec,
    *,
    code_dir: Path,
    runtime_dir: Path,
    environment: dict[str, str],
    log_dir: Path,
    console: bool,
    isolate: bool = True,
    pycache_dir: Path | None = None,
) -> WorkerSpec:
    log_dir.mkdir(parents=True, exist_ok=True)
    return WorkerSpec(
        function=function.name,
        arn=function.arn,
        handler=function.handler,
        code_dir=str(code_dir),
        runtime_dir=str(runtime_dir),
        environment={**function.environment, **environment},
        timeout_s=function.timeout_s,
        memory_mb=function.memory_mb,
        log_path=str(log_dir / f"{function.name}.log"),
        console=console,
        isolate=isolate,
        pycache_dir=None if pycache_dir is None else os.path.abspath(pycache_dir),
    )
