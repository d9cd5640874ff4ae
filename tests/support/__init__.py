"""Helpers every test group shares (event builders, fakes). Never imported by runtime code."""
