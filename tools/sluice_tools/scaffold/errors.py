"""The one error scaffolding raises: a refusal with a one-line reason for the operator."""

from __future__ import annotations


class ScaffoldError(Exception):
    """The consumer cannot be created as asked; `str(error)` says why, in one line."""
