"""The index consumer's logic: every version of each entity in the records table."""
