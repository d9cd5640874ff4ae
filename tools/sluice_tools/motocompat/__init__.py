"""Everything Sluice knows about moto's gaps, in one place, for the moto version it was measured on.

moto is Sluice's local control plane (`sluice local`, the deploy tests). Where moto differs
from AWS, Sluice either patches moto's server or works around it; both are written against
one moto version, `TESTED_MOTO`, and `guard()` refuses any other, loudly, naming what to
re-check, rather than letting a patch silently do the wrong thing.

- `cfn`: what moto's CloudFormation reports as created but skips (bucket, queue and topic
  policies, subscriptions, alarms, S3 public access blocks, versioning, lifecycle, logging
  and notifications, DynamoDB TTL and point-in-time recovery), applied by the deploy through
  the APIs from the same templates (`fill_gaps`); and an invoke config that moto appends to
  instead of replacing (`put_function_event_invoke_config`). Verified by
  tests/infra/test_moto_gaps.py.
- `server`: patches of moto's server for the local runtime (`quiet`): no Lambda invocations
  of its own, S3 events with version id and sequencer, TLS-only bucket policies, DynamoDB
  transactions that honour `ClientRequestToken` and do not copy tables, EventBridge rules
  that skip disabled and schedule-only rules and hand Lambda and SNS targets (which moto
  refuses) to the runtime, and speed-ups.
- Worked around elsewhere, listed here so one file says what moto lacks:
  - the `Prefix` filter rule `chalice deploy` sends for `on_s3_event(prefix=...)` makes moto
    answer 500, so ingest takes every key and quarantines what is not under
    `incoming/<type>/` (ingest/app.py);
  - `StartMessageMoveTask` is not implemented: `sluice dlq redrive` falls back to
    send-then-delete (dlq/redrive.py);
  - a multipart upload emits two `ObjectCreated` events and `put_object` an
    `s3:ObjectTagging:Put` one: the runtime filters duplicates (local/delivery.py);
  - moto's own IAM check compares most services' calls with `*`: the runtime enforces IAM
    itself (local/iam.py);
  - `SetQueueAttributes` without `Policy` deletes the queue's policy: the drift repair
    repeats the policy on the emulator (deploy/drift.py);
  - a KMS key created by CloudFormation cannot be described (its policy is stored as an
    object), and tags on one make the stack fail: the templates tag no key.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Iterable

TESTED_MOTO = "5.2.5"
PIN = f"moto[server]=={TESTED_MOTO}"


class MotoCompatError(RuntimeError):
    """moto is not the version Sluice's compatibility layer was written for, or it changed."""


def installed_version() -> str:
    import moto

    return str(moto.__version__)


def guard(patched: Iterable[tuple[str, str]] = ()) -> None:
    """Raise `MotoCompatError` unless moto is `TESTED_MOTO` and every (module.Class or
    module, attribute) in `patched` still exists."""
    version = installed_version()
    if version != TESTED_MOTO:
        raise MotoCompatError(
            f"moto {version} is installed, but Sluice's moto compatibility layer "
            f"(tools/sluice_tools/motocompat) was written and verified for moto {TESTED_MOTO}: "
            f"install {PIN} (pyproject.toml pins it), or re-verify every gap "
            "(tests/infra/test_moto_gaps.py, tests/local/) and then raise TESTED_MOTO"
        )
    missing = [f"{owner}.{name}" for owner, name in patched if not _exists(owner, name)]
    if missing:
        raise MotoCompatError(
            f"moto {version} no longer has {', '.join(missing)}, which Sluice patches "
            "(tools/sluice_tools/motocompat/server.py): the patch would do nothing or break"
        )


def _exists(owner: str, name: str) -> bool:
    module_name, _, attr_path = owner.partition(":")
    try:
        found: object = importlib.import_module(module_name)
    except ImportError:
        return False
    for part in filter(None, attr_path.split(".")):
        if not hasattr(found, part):
            return False
        found = getattr(found, part)
    if hasattr(found, name):
        return True
    # An instance attribute: the class's __init__ must still set it.
    init = getattr(found, "__init__", None)
    try:
        source = inspect.getsource(init)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return False
    return isinstance(found, type) and re.search(rf"self\.{re.escape(name)}\b", source) is not None
