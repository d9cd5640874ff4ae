"""`sluice query`: the curated data of a stage as one DuckDB table per record type."""

from sluice_tools.query.engine import (
    CuratedReadError,
    QueryError,
    QueryResult,
    download_curated,
    run_query,
)

__all__ = ["CuratedReadError", "QueryError", "QueryResult", "download_curated", "run_query"]
