"""The index consumer's logic: the latest state of each entity in the records table."""
