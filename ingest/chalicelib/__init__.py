"""The ingest stage: S3 objects and scheduled pulls become chunks on the raw queue."""
