"""The `sluice` command: operator tooling for the pipeline.

Tooling only: Lambda code never imports this package; it may import `sluice` (shared).
"""
