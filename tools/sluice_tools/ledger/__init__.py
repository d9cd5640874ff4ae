"""The ledger's read side: `sluice ledger` reads what the stages wrote and reconciles it."""

from sluice_tools.ledger.command import format_report, ledger_command, ledger_report
from sluice_tools.ledger.filters import FilterPolicy, FilterPolicyError, SinkPolicy
from sluice_tools.ledger.reconcile import DeadChunk, Exit, LedgerEntry, Report, reconcile
from sluice_tools.ledger.store import read_ledger

__all__ = [
    "DeadChunk",
    "Exit",
    "FilterPolicy",
    "FilterPolicyError",
    "LedgerEntry",
    "Report",
    "SinkPolicy",
    "format_report",
    "ledger_command",
    "ledger_report",
    "read_ledger",
    "reconcile",
]
