"""`sluice trace`: one record's hops and ending, or one landed object's records."""

from sluice_tools.trace.command import trace_command
from sluice_tools.trace.logsource import (
    CloudWatchLogs,
    LocalLogFiles,
    LogLine,
    LogQuery,
    LogSource,
)
from sluice_tools.trace.tracer import NotFoundError, RecordTrace, Stores, Tracer

__all__ = [
    "CloudWatchLogs",
    "LocalLogFiles",
    "LogLine",
    "LogQuery",
    "LogSource",
    "NotFoundError",
    "RecordTrace",
    "Stores",
    "Tracer",
    "trace_command",
]
