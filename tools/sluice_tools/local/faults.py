"""Injected faults for tests and demos: which invocation fails, hangs or dies, and how often.

The runtime decides per invocation (counts are shared by all workers of a function); the
worker's hook carries it out before the handler runs. Configured by env `SLUICE_FAULTS`, a
JSON list of `{"function": "...", "kind": "error|hang|crash", "times": N, "match": "..."}`
(`function`: a full name or its end, e.g. "-cleanse"; `times` absent: always; `match`: only
invocations whose event contains this text).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from typing import Any

KINDS = frozenset({"error", "hang", "crash"})


@dataclass
class FaultRule:
    function: str
    kind: str = "error"
    times: int | None = None
    match: str | None = None
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind {self.kind!r} is not one of {sorted(KINDS)}")

    def applies(self, function: str, event: str) -> bool:
        if not (function == self.function or function.endswith(self.function)):
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        return self.match is None or self.match in event


class FaultPlan:
    """The faults in force; `decide` is the pool's per-invocation hook."""

    def __init__(self, rules: list[FaultRule] | None = None) -> None:
        self._lock = threading.Lock()
        self.rules = list(rules or [])

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> FaultPlan:
        raw = (os.environ if env is None else env).get("SLUICE_FAULTS") or ""
        return cls(parse(raw)) if raw.strip() else cls()

    def add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def decide(self, function: str, event: str) -> dict[str, Any] | None:
        with self._lock:
            for rule in self.rules:
                if rule.applies(function, event):
                    rule.fired += 1
                    return {
                        "kind": rule.kind,
                        "message": f"injected {rule.kind} #{rule.fired} in {function}",
                    }
        return None


def parse(raw: str) -> list[FaultRule]:
    doc = json.loads(raw)
    if isinstance(doc, dict):
        doc = [doc]
    return [
        FaultRule(
            function=str(item["function"]),
            kind=str(item.get("kind", "error")),
            times=None if item.get("times") is None else int(item["times"]),
            match=item.get("match"),
        )
        for item in doc
    ]
