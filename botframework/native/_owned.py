"""NativeHandle: the one base of the wrappers that own native memory.

    subclass __init__   self._handle = <pointer>  (and the other attributes named in _frees)
    handle              the pointer; ClosedError once closed
    close(), with, del  _on_close(), then each attribute in _frees: dropped, then freed

A subclass only declares what it owns and which llama.cpp / bf_shim function frees each
pointer; close() does the rest, once. Every owned attribute has a class-level None, so close()
(and __del__) also work on an object whose __init__ raised half-way: nothing to free yet.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, ClassVar, Self

from botframework.errors import ClosedError
from botframework.native._lib import lib


class NativeHandle:
    """Owns one or more native pointers, freed by close() (also on `with` exit and __del__).

    _frees: (attribute, name of the lib() function that frees it), in the order close() frees
    them; None as the function for memory that cffi owns or that another object lent (dropped,
    not freed). The main pointer is `_handle`: `handle` returns it, or raises ClosedError.
    """

    _frees: ClassVar[tuple[tuple[str, str | None], ...]] = (("_handle", None),)
    _what: ClassVar[str] = "native object"  # "<_what> is closed"
    _handle: Any = None  # the class default: None before __init__ sets it and after close()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attribute, _ in cls._frees:
            if not hasattr(cls, attribute):  # a half-built object reads None, never AttributeError
                setattr(cls, attribute, None)

    @property
    def handle(self) -> Any:
        handle = self._handle
        if handle is None:
            raise ClosedError(f"{self._what} is closed")
        return handle

    @property
    def closed(self) -> bool:
        return self._handle is None

    def check_open(self) -> None:
        """ClosedError once closed (for a method that reaches native memory some other way)."""
        if self._handle is None:
            raise ClosedError(f"{self._what} is closed")

    def close(self) -> None:
        """Free what this object owns. Idempotent, and safe after a failed __init__."""
        self._on_close()
        instance = self.__dict__
        for attribute, free in self._frees:
            # pop is atomic under the GIL: of two threads closing at once only one gets the
            # pointer, so nothing is freed twice; the class default (None) shows through after.
            pointer = instance.pop(attribute, None)
            if pointer is not None and free is not None:
                getattr(lib(), free)(pointer)

    def _on_close(self) -> None:
        """Runs at the start of every close(), before anything is freed: close what points
        into this object, drop caches. Must be idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
