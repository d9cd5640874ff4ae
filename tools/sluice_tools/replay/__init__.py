"""`sluice replay`: send rejected records through the pipeline again, once each."""

from sluice_tools.replay.command import replay_group
from sluice_tools.replay.quarantine import (
    QuarantineReplay,
    ReplayError,
    Result,
    Selection,
    parse_since,
    replay_chunk_id,
)

__all__ = [
    "QuarantineReplay",
    "ReplayError",
    "Result",
    "Selection",
    "parse_since",
    "replay_chunk_id",
    "replay_group",
]
