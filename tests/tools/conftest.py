"""Fixtures of the tooling's tests: the suite's AWS test environment (support.env)."""

from __future__ import annotations

from support.env import aws_env

__all__ = ["aws_env"]
