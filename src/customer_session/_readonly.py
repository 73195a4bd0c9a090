"""Read-only views of private attrs fields: immutability that costs nothing to build.

The library's value classes (sessions, cart items, history records) keep each field
in a private slot and show it through a typed read-only property. attrs' own ways
to make fields immutable (``frozen=True``, ``on_setattr``) put a ``__setattr__`` in
the class, and with one CPython routes every attribute write through a
Python-level lookup, ``__init__``'s own included: that more than doubles the cost
of creating an object with many fields.

:func:`protect` then gives each read-only property a setter and a deleter that
raise :class:`~customer_session.exceptions.ProtectedFieldError` (also an
``AttributeError``) with a hint, where a bare property would raise a plain
``AttributeError``. Type checkers still see read-only properties.
"""

from __future__ import annotations

from operator import attrgetter
from typing import TYPE_CHECKING

import attrs

from customer_session.exceptions import ProtectedFieldError

if TYPE_CHECKING:
    from collections.abc import Callable

    from attrs import AttrsInstance


def protect(cls: type[AttrsInstance], hint: Callable[[str], str]) -> None:
    """Make every read-only property of ``cls`` refuse writes and deletes.

    Args:
        cls: The class, after attrs has built it.
        hint: What to use instead, given the property's name.
    """

    def refusal(name: str) -> tuple[Callable[[object, object], None], Callable[[object], None]]:
        def refuse_write(_instance: object, _value: object) -> None:
            raise ProtectedFieldError(name, hint(name))

        def refuse_delete(_instance: object) -> None:
            raise ProtectedFieldError(name, hint(name))

        return refuse_write, refuse_delete

    slots = {a.alias: a.name for a in attrs.fields(cls) if a.alias != a.name}
    for name, view in list(vars(cls).items()):
        if isinstance(view, property) and view.fset is None and view.fdel is None:
            refuse_write, refuse_delete = refusal(name)
            # A view of a slot reads it with a C-level getter; the getter written in
            # the class (``return self._state``) says the same for readers and mypy.
            getter = attrgetter(slots[name]) if name in slots else view.fget
            setattr(cls, name, property(getter, refuse_write, refuse_delete, view.__doc__))


def public_repr(instance: AttrsInstance) -> str:
    """``Class(arg=value, ...)`` with the constructor's argument names (not the slots)."""
    shown = ", ".join(
        f"{a.alias}={getattr(instance, a.name)!r}" for a in attrs.fields(type(instance)) if a.repr
    )
    return f"{type(instance).__name__}({shown})"
