"""Sluice's shared Lambda runtime: settings, envelope, clients, batch, idempotency, observability.

Every stage imports it, so it stays import-light and never imports tooling or an app:
importing `sluice` imports none of its modules.

`API` is the runtime's public API in one place: per module, the names an app may use. Each
module's `__all__` lists the same names, with their types and docstrings (what they raise)
in the module; anything else is internal and may change. `tests/shared/test_public_api.py`
checks that the apps in the tree use nothing else.
"""

__version__ = "0.1.0"

# The public API by module (`sluice` itself: the modules apps import whole).
API: dict[str, tuple[str, ...]] = {
    "sluice": (
        "aws",
        "batch",
        "jsonx",
        "observability",
    ),
    "sluice.attributes": (
        "json_attribute",
        "json_from_attribute",
    ),
    "sluice.aws": (
        "BATCH_WRITE_ATTEMPTS",
        "UnprocessedItemsError",
        "batch_write",
        "client",
        "client_errors",
        "dynamodb",
        "error_code",
        "s3",
        "sns",
        "sqs",
    ),
    "sluice.batch": (
        "BatchResponse",
        "ChunkOutcome",
        "ItemFailure",
        "SQSMessage",
        "process_sqs_batch",
        "sqs_delivery",
    ),
    "sluice.config": (
        "DEFAULT_CHUNK_MAX_BYTES",
        "ResourceNames",
        "SNS_MAX_MESSAGE_BYTES",
        "Settings",
        "env_bool",
        "get_settings",
        "names",
    ),
    "sluice.delivery": (
        "Delivery",
        "current_delivery",
        "delivering",
    ),
    "sluice.envelope": (
        "ATTR_CORRELATION_ID",
        "ATTR_TYPE",
        "BASE_ATTRIBUTES",
        "Chunk",
        "ChunkLimits",
        "MAX_MESSAGE_ATTRIBUTES",
        "Record",
        "StringAttribute",
        "attributes_size",
        "chunk_id",
        "derive_chunk_id",
        "object_correlation_id",
        "pack_records",
        "record_id",
        "utc_now_iso",
    ),
    "sluice.errors": (
        "ConfigError",
        "OversizeRecordError",
        "PermanentError",
        "SluiceError",
        "TransientError",
    ),
    "sluice.events": (
        "KIND_DELIVERED",
        "KIND_LANDED",
        "KIND_STUCK",
        "ProgressEvents",
        "delivered_events",
        "landed_events",
        "sent_attr",
        "stuck_events",
    ),
    "sluice.filters": (
        "Attributes",
        "FilterPolicy",
        "FilterPolicyError",
        "SUPPORTED",
        "check_scope",
    ),
    "sluice.idempotency": (
        "Claim",
        "ClaimInProgressError",
        "IdempotencyStore",
        "Once",
        "RemainingTime",
        "new_owner",
        "remaining_ms_of",
        "renew_lease",
        "run_once",
    ),
    "sluice.jsonx": (
        "JSONDecodeError",
        "dumps",
        "loads",
    ),
    "sluice.lazy": ("first_use",),
    "sluice.ledger": ("LedgerWriter",),
    "sluice.observability": (
        "Metrics",
        "NoopTracer",
        "Tracer",
        "XRayTracer",
        "add_metric",
        "bind",
        "configure_logging",
        "configure_metrics",
        "default_metrics",
        "flush_metrics",
        "get_context",
        "get_logger",
        "get_tracer",
        "install",
        "log_context",
        "set_dimensions",
        "set_tracer",
        "tracing_enabled",
    ),
    "sluice.observability.tracing": ("inject_trace_context",),
    "sluice.progress": (
        "OPEN",
        "OPEN_DEADLINE",
        "OPEN_INDEX",
        "OPEN_SHARD",
        "Progress",
        "iso",
    ),
    "sluice.registry": (
        "RecordTypeSpec",
        "Registry",
        "load_registry",
    ),
    "sluice.stage": (
        "FAILED_FROM",
        "LambdaEvent",
        "StageRuntime",
        "remaining_of",
    ),
}
