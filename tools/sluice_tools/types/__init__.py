"""Record types from the operator's side: `sluice new-type`, `sluice types`, `sluice types check`.

The registry itself (`types/<name>/`, loaded by `sluice.registry`) is shared with the apps;
this package only drafts new folders and checks edited ones against the curated bucket.
"""
