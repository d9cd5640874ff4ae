"""Fixtures of the tooling's tests: the suite's AWS test environment (support.env) and the
stage deployed into moto's server once per session (support.deployed)."""

from __future__ import annotations

from support.deployed import deployed, deployed_stage
from support.env import aws_env

__all__ = ["aws_env", "deployed", "deployed_stage"]
