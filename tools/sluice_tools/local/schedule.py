"""Schedule expressions, read lightly: `rate(N unit)` exactly, `cron(...)` by its minute field.

EventBridge in moto never fires; the runtime does, on these periods.
"""

from __future__ import annotations

import re

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNIT_S = {"minute": 60, "hour": 3600, "day": 86400}


def period_seconds(expression: str) -> float | None:
    """Seconds between firings; None if the expression is not understood (never fired).

    cron: a `*/N` or `0/N` minute field fires every N minutes, a fixed minute hourly, else
    (hours or days restricted) daily — close enough for a local run, which `fire` completes.
    """
    expression = expression.strip()
    rate = _RATE.match(expression)
    if rate:
        amount = int(rate.group(1))
        return float(amount * _UNIT_S[rate.group(2).rstrip("s")]) if amount > 0 else None
    if expression.startswith("cron(") and expression.endswith(")"):
        fields = expression[5:-1].split()
        if len(fields) != 6:
            return None
        minute, hour = fields[0], fields[1]
        step = re.match(r"^(?:\*|0)/(\d+)$", minute)
        if step and hour == "*":
            return float(int(step.group(1)) * 60)
        if minute == "*" and hour == "*":
            return 60.0
        if hour == "*":
            return 3600.0
        return 86400.0
    return None
