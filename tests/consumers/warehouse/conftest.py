"""The warehouse consumer's tests use the shared consumer fixtures (consumers/fixtures.py)."""

from consumers.fixtures import account, app_dir, app_module, aws_env

__all__ = ["account", "app_dir", "app_module", "aws_env"]
