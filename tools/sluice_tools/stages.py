"""The pipeline's stages and the Chalice apps of the tree: defined once for the tooling,
the noxfile, the benchmarks and the tests.

The fixed stages run in this order; consumers are the dirs `consumers/<name>/` with an
`app.py`, found in the tree (their ledger stage is `consumer-<name>`). Deployed code keeps
its own stage name where it needs one (each app's `STAGE`, `sluice.progress`).

Standard library only: the noxfile imports this module from nox's own interpreter, where
neither `sluice` nor the tooling's dependencies are installed.
"""

from __future__ import annotations

from pathlib import Path

INGEST, CLEANSE, ROUTER = "ingest", "cleanse", "router"
# The stages with a fixed place in the tree and in the pipeline, in pipeline order.
PIPELINE_STAGES = (INGEST, CLEANSE, ROUTER)
CONSUMERS_DIR = "consumers"
# A consumer's stage name in the ledger, the logs and the failures queue: consumer-<name>.
CONSUMER_PREFIX = "consumer-"


def consumer_stage(name: str) -> str:
    """The stage name of consumer `name` (`index` -> `consumer-index`)."""
    return f"{CONSUMER_PREFIX}{name}"


def app_dirs(root: Path) -> list[Path]:
    """Every Chalice app dir of the tree (one with `app.py`): the pipeline stages in order,
    then `consumers/*` by name."""
    candidates = [root / name for name in PIPELINE_STAGES]
    candidates += sorted(p.parent for p in root.glob(f"{CONSUMERS_DIR}/*/app.py"))
    return [d for d in candidates if (d / "app.py").is_file()]


def app_rel(root: Path, app_dir: Path) -> str:
    """An app dir relative to the root, as `--only` and the test groups name it
    (`router`, `consumers/index`)."""
    return app_dir.relative_to(root).as_posix()
