"""`sluice deploy` and `sluice doctor`: a stage's stacks, Chalice apps and post-deploy settings.

Python API for other tools (the local runtime, the tests): `pipeline.deploy_stage`,
`doctor.run_doctor`, `target.Target`, each imported from its module. This package module
re-exports nothing: `motocompat.cfn` imports deploy's templates and the deploy pipeline
imports `motocompat.cfn`, so a package that imported its pipeline would be in a cycle.
"""
