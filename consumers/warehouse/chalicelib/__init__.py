"""The warehouse consumer's logic: chunks of records as partitioned JSON Lines in S3."""
