"""The worker process: runs one function's deployed code the way Lambda's Python runtime does.

Spawned (multiprocessing "spawn") by `pool.py`. Standard library only at import: the function's
own zip dir goes first on sys.path and the dev environment's packages are taken away, so a
package missing from the zip fails here as it would on Lambda.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import sys
import sysconfig
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Modules of this package the worker itself is made of; the function never imports them.
_OWN_MODULES = ("sluice_tools", "sluice_tools.local", "sluice_tools.local.worker")
HANG_SECONDS = 3600
# A worker's botocore app id (`AWS_SDK_UA_APP_ID`): `app/sluice-fn.<pid>` in the User-Agent of
# every AWS call the function makes, so the emulator knows the caller (`apifaults.py` faults
# only these calls, finds the function by pid and kills the pid for `kill_after`). botocore
# warns about app ids over 50 characters: a function name would not always fit.
APP_ID_PREFIX = "sluice-fn."


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to behave as one instance of `function`."""

    function: str
    arn: str
    handler: str  # "module.attribute", e.g. "app.on_object_created"
    code_dir: str  # the extracted deployment zip
    runtime_dir: str  # what the Lambda runtime provides beyond the zip (boto3 and its deps)
    environment: dict[str, str]
    timeout_s: int
    memory_mb: int
    log_path: str
    console: bool = True
    isolate: bool = True  # drop the dev environment's site-packages from sys.path
    extra_paths: tuple[str, ...] = field(default_factory=tuple)
    pycache_dir: str | None = None  # the runtime's bytecode cache (see `_use_bytecode_cache`)


@dataclass(frozen=True)
class Request:
    request_id: str
    event: str | bytes  # JSON (UTF-8), as Lambda hands it over
    fault: dict[str, Any] | None = None


class LambdaContext:
    """The context object of Lambda's Python runtime (the attributes handlers use)."""

    def __init__(self, spec: WorkerSpec, request_id: str, started: float) -> None:
        self.aws_request_id = request_id
        self.function_name = spec.function
        self.function_version = "$LATEST"
        self.invoked_function_arn = spec.arn
        self.memory_limit_in_mb = spec.memory_mb
        self.log_group_name = f"/aws/lambda/{spec.function}"
        self.log_stream_name = f"local/{os.getpid()}"
        self.identity = None
        self.client_context = None
        self._deadline = started + spec.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class InjectedFault(RuntimeError):
    """Raised by the fault hook (tests, `SLUICE_FAULTS`), never by the function."""


def serve(conn: Any, spec: WorkerSpec) -> None:
    """The worker's main loop: one request at a time, until the pipe closes."""
    _become_lambda(spec)
    handler: Any = None
    while True:
        try:
            request: Request = conn.recv()
        except (EOFError, OSError):
            return
        started = time.monotonic()
        cpu_started = time.process_time()
        try:
            if handler is None:
                handler = _load_handler(spec.handler)
            event = json.loads(request.event)
            _apply_fault(request.fault, spec)
            result = handler(event, LambdaContext(spec, request.request_id, started))
            reply: tuple[str, Any] = ("ok", json.dumps(result))
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                return
            reply = ("error", _error_payload(exc))
            print(f"[ERROR] {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        # CPU time of this invocation (the first includes loading the handler): what the
        # function itself spent, apart from waiting on the emulator sharing these cores.
        cpu_ms = (time.process_time() - cpu_started) * 1000
        try:
            conn.send((*reply, cpu_ms))
        except (EOFError, OSError):
            return


def _apply_fault(fault: dict[str, Any] | None, spec: WorkerSpec) -> None:
    """The fault hook: fail, hang or die before the handler runs, as the parent decided."""
    if not fault:
        return
    kind = fault.get("kind")
    message = str(fault.get("message") or f"injected fault in {spec.function}")
    if kind == "error":
        raise InjectedFault(message)
    if kind == "hang":
        time.sleep(HANG_SECONDS)
    if kind == "crash":
        os._exit(137)


def _load_handler(handler: str) -> Any:
    module_name, _, attribute = handler.rpartition(".")
    module = importlib.import_module(module_name)
    return getattr(module, attribute)


def _error_payload(exc: BaseException) -> dict[str, Any]:
    return {
        "errorType": type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_exception(exc)[-12:],
    }


def _become_lambda(spec: WorkerSpec) -> None:
    """Environment, sys.path and stdout of a Lambda instance of `spec.function`."""
    keep = {k: v for k, v in os.environ.items() if k in {"PATH", "LANG", "TMPDIR", "HOME"}}
    os.environ.clear()
    os.environ.update(keep)
    os.environ.update(
        {
            "LAMBDA_TASK_ROOT": spec.code_dir,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info[0]}.{sys.version_info[1]}",
            "AWS_LAMBDA_FUNCTION_NAME": spec.function,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(spec.timeout_s),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.function}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    os.environ.update(spec.environment)
    os.environ["AWS_SDK_UA_APP_ID"] = app_id()
    os.chdir(spec.code_dir)
    _use_bytecode_cache(spec)
    _isolate_imports(spec)
    _tee_output(spec)


def app_id(pid: int | None = None) -> str:
    """The app id a worker puts in its calls' User-Agent (see APP_ID_PREFIX)."""
    return f"{APP_ID_PREFIX}{os.getpid() if pid is None else pid}"


def _use_bytecode_cache(spec: WorkerSpec) -> None:
    """Compiled modules go to (and come from) the runtime's cache, outside the zip's tree.

    A deployment zip holds sources only (botocore alone is ~20 MB of them), and the extracted
    tree is left as deployed. Without a cache, every worker would compile all it imports again
    (and always where PYTHONDONTWRITEBYTECODE is set): seconds of CPU per cold start, taken
    from the cores the pipeline runs on. The cache is keyed by each source file's path, size
    and mtime, as Python's own `__pycache__` is, so a changed zip (a new tree) compiles anew.
    """
    if spec.pycache_dir is None:
        return
    sys.pycache_prefix = spec.pycache_dir
    sys.dont_write_bytecode = False


def _isolate_imports(spec: WorkerSpec) -> None:
    """Zip dir first; without `isolate`, the dev site-packages stay (a looser check)."""
    stdlib = {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}
    if spec.isolate:
        kept = [p for p in sys.path if p and any(p.startswith(s) for s in stdlib)]
        kept = [p for p in kept if "site-packages" not in p and "dist-packages" not in p]
        # Editable installs (the dev `sluice` and `sluice_tools`) resolve through finders.
        sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in repr(f)]
    else:
        kept = list(sys.path)
    sys.path[:] = [spec.code_dir, spec.runtime_dir, *spec.extra_paths, *kept]
    importlib.invalidate_caches()
    # The spawn bootstrap may have imported the parent's main module and what it imports
    # (the dev `sluice`, click, ...): forget every module that is not the standard library.
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name in _OWN_MODULES or name in {"__main__", "__mp_main__"} or not path:
            continue
        if not any(path.startswith(s) for s in stdlib) or "site-packages" in path:
            del sys.modules[name]


def _tee_output(spec: WorkerSpec) -> None:
    """fd 1 and 2 into a pipe; a thread copies each line to the log file and the console."""
    console = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 1)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", 0), encoding="utf-8", line_buffering=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", 0), encoding="utf-8", line_buffering=True)
    thread = threading.Thread(
        target=_copy_lines, args=(read_fd, console, spec), name="log-tee", daemon=True
    )
    thread.start()


def _copy_lines(read_fd: int, console_fd: int, spec: WorkerSpec) -> None:
    short = spec.function
    with (
        os.fdopen(read_fd, "rb") as source,
        open(spec.log_path, "ab", buffering=0) as log,
    ):
        for raw in source:
            log.write(raw if raw.endswith(b"\n") else raw + b"\n")
            if spec.console:
                line = console_line(short, raw.decode("utf-8", errors="replace").rstrip("\n"))
                if line is not None:
                    os.write(console_fd, (line + "\n").encode("utf-8", errors="replace"))


def console_line(function: str, line: str) -> str | None:
    """One short readable line per log line: time, function, level, message, correlation id.

    None for what the console leaves to the log file: metric lines and library chatter
    below WARNING (botocore's "Found credentials ...").
    """
    try:
        doc = json.loads(line)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        stamp = datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]
        return f"{stamp} {function} {line}"
    if "_aws" in doc and "message" not in doc:  # an Embedded Metric Format line
        return None
    level = str(doc.get("level") or doc.get("levelname") or "INFO")
    library = not str(doc.get("logger") or "").startswith(("sluice", "chalicelib", "app"))
    if library and level in {"DEBUG", "INFO"}:
        return None
    message = str(doc.get("message") or "")
    tail = [f"{k}={doc[k]}" for k in ("correlation_id", "reason", "error") if doc.get(k)]
    # A function's own extra fields (a consumer's `order_id`, `amount`) too, not only the
    # log file's: everything but what the line shows already or every line carries.
    tail += [f"{k}={v}" for k, v in doc.items() if k not in _CONSOLE_SKIP and v is not None]
    if doc.get("exc_info"):
        tail.append(str(doc["exc_info"]).strip().splitlines()[-1])
    return f"{_time_of(doc)} {function} {level:<7} {message} {' '.join(tail)}".rstrip()


_CONSOLE_SKIP = frozenset(
    {"timestamp", "level", "levelname", "message", "logger", "service", "stage"}
    | {"function_name", "request_id", "cold_start", "chunk_id", "xray_trace_id", "exc_info"}
    | {"correlation_id", "reason", "error", "record_ids", "natural_keys"}
)


def _time_of(doc: dict[str, Any]) -> str:
    stamp = str(doc.get("timestamp") or "")
    if "T" in stamp:
        return stamp.split("T", 1)[1][:12]
    return datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]
