"""`sluice logs`: the functions' log lines, locally or from CloudWatch Logs, made readable."""

from sluice_tools.logs.command import format_line, logs_command

__all__ = ["format_line", "logs_command"]
