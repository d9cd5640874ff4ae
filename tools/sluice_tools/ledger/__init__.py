"""The ledger's read side: `sluice ledger` reads what the stages wrote and reconciles it."""

from sluice_tools.ledger.command import format_report, ledger_command, ledger_report
from sluice_tools.ledger.filters import FilterPolicy, FilterPolicyError, SinkPolicy
from sluice_tools.ledger.reconcile import (
    ClaimState,
    DeadChunk,
    Exit,
    LandedObject,
    LedgerEntry,
    Report,
    reconcile,
)
from sluice_tools.ledger.store import landed_objects, read_claims, read_ledger

__all__ = [
    "ClaimState",
    "DeadChunk",
    "Exit",
    "FilterPolicy",
    "FilterPolicyError",
    "LandedObject",
    "LedgerEntry",
    "Report",
    "SinkPolicy",
    "format_report",
    "landed_objects",
    "ledger_command",
    "ledger_report",
    "read_claims",
    "read_ledger",
    "reconcile",
]
