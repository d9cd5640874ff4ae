"""`first_use`: made on first read, once per instance, never when one was given."""

from __future__ import annotations

from sluice.lazy import first_use


class Holder:
    made = 0

    def _make(self) -> list[str]:
        type(self).made += 1
        return [self.name]

    value: first_use[list[str]] = first_use(_make)

    def __init__(self, name: str, value: list[str] | None = None) -> None:
        self.name = name
        self._value = value


def test_the_value_is_made_on_the_first_read_and_kept() -> None:
    Holder.made = 0
    holder = Holder("a")
    assert Holder.made == 0  # nothing made in __init__
    assert holder.value == ["a"]
    assert holder.value is holder.value
    assert Holder.made == 1


def test_each_instance_makes_its_own_and_a_given_value_is_used() -> None:
    Holder.made = 0
    given = ["given"]
    assert Holder("a").value == ["a"]
    assert Holder("b").value == ["b"]
    assert Holder("c", given).value is given
    assert Holder.made == 2


def test_the_class_attribute_is_the_descriptor() -> None:
    assert isinstance(Holder.value, first_use)
