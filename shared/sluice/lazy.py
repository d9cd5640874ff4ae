"""`first_use`: an attribute made on its first read unless it was given, the one way the
runtime holds its clients, table and bucket names and settings.

    class Quarantine:
        client: first_use[S3Client] = first_use(lambda self: aws.s3())

        def __init__(self, client: S3Client | None = None) -> None:
            self._client = client  # None: made on first use

Nothing is made at import or in `__init__` (a client costs ~40 ms; settings read the
environment, which tests set after import), and a test passes its own. The value lives in
`_<name>` on the instance; None there means "not made yet".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")

__all__ = ["first_use"]


class first_use(Generic[T]):  # lower case: used like `property`
    """A descriptor: `make(instance)` on the first read of the attribute, kept after."""

    def __init__(self, make: Callable[[Any], T]) -> None:
        self._make = make
        self._slot = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = f"_{name}"

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> first_use[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> T | first_use[T]:
        if instance is None:
            return self
        value: T | None = getattr(instance, self._slot, None)
        if value is None:
            value = self._make(instance)
            setattr(instance, self._slot, value)
        return value
