"""The alerts consumer's logic: a short human-readable alert per high-priority record."""
