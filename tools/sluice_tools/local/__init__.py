"""The local runtime: the whole pipeline on one machine, moto as control plane, Lambda emulated.

Import nothing here: worker processes import `sluice_tools.local.worker` before their own
sys.path is set, so this package must not pull in the dev environment's `sluice`.
"""
