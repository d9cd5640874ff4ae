"""The runtime's process and the garbage collector: the deploy frozen, full collections rarer.

In a module of its own: it starts a runtime, which must not share the process's moto state
with another module's.
"""

from __future__ import annotations

import gc
from pathlib import Path

from sluice_tools.local.runtime import RUNTIME_GC_THRESHOLDS, LocalRuntime, Options


def test_the_runtime_freezes_the_deploy_and_makes_full_collections_rarer(
    aws_env: None, tmp_path: Path
) -> None:
    before = gc.get_threshold()
    runtime = LocalRuntime(Options(deploy=False, state_dir=tmp_path / "state", console=False))
    runtime.start()
    try:
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == RUNTIME_GC_THRESHOLDS != before
    finally:
        runtime.stop()
    assert gc.get_threshold() == before  # the process gets its collector back
    assert gc.get_freeze_count() == 0
