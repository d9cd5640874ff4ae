"""`sluice deploy` and `sluice doctor`: a stage's stacks, Chalice apps and post-deploy settings.

Python API for other tools (the local runtime): `deploy_stage`, `run_doctor`, `Target`.
"""

from __future__ import annotations

from sluice_tools.deploy.doctor import DoctorReport, run_doctor
from sluice_tools.deploy.pipeline import DeployError, DeployReport, deploy_stage
from sluice_tools.deploy.target import Target

__all__ = [
    "DeployError",
    "DeployReport",
    "DoctorReport",
    "Target",
    "deploy_stage",
    "run_doctor",
]
