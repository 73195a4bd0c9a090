"""The one test of a time the library can hold: an aware datetime that has a time in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum

from attrs import frozen

from customer_session._show import described, shown


class Fault(Enum):
    """Why a value is no time the library can hold."""

    NOT_A_DATETIME = "not a datetime"
    NAIVE = "a naive datetime"
    BROKEN_ZONE = "its time zone failed"
    OUTSIDE_YEARS = "outside the years 1 to 9999 in UTC"


@frozen
class Untimed:
    """What :func:`in_utc` gives for a value that has no time in UTC: why not."""

    fault: Fault
    zone_error: Exception | None = None
    """What the value's time zone raised (only for :attr:`Fault.BROKEN_ZONE`)."""

    def needed(self, value: object) -> str:
        """The problem with ``value`` as a field's check words it (``must be ..., got ...``).

        A broken time zone is refused as a naive time is, with what it raised.
        """
        if self.fault is Fault.OUTSIDE_YEARS:
            return f"must be within the years 1 to 9999 in UTC, got {shown(value)}"
        return f"must be an aware datetime, got {shown(value)}{self.zone_failure()}"

    def zone_failure(self) -> str:
        """``, whose time zone failed (<error>)`` after a value shown, or ``""``."""
        if self.zone_error is None:
            return ""
        return f", whose time zone failed ({described(self.zone_error)})"


_NOT_A_DATETIME = Untimed(Fault.NOT_A_DATETIME)
_NAIVE = Untimed(Fault.NAIVE)
_OUTSIDE_YEARS = Untimed(Fault.OUTSIDE_YEARS)


def in_utc(value: object) -> datetime | Untimed:
    """``value``, an aware datetime, as the same instant in UTC; else why it has none.

    A time zone is the value's own code: when its ``utcoffset()`` raises, returns no
    ``timedelta`` or one of 24 hours or more (``datetime`` raises for those two), the
    value has no time in UTC, as a naive one has none. Only that call and the
    conversion are guarded: any error of theirs is the value's problem, for the
    caller to report as it reports a naive time.
    """
    if not isinstance(value, datetime):
        return _NOT_A_DATETIME
    if value.tzinfo is UTC:  # astimezone(UTC) would return it as it is
        return value
    try:
        if value.utcoffset() is None:
            return _NAIVE
        return value.astimezone(UTC)  # asks the zone again: it may fail only now
    except OverflowError:  # e.g. 0001-01-01 at +01:00: no time in UTC
        return _OUTSIDE_YEARS
    except Exception as exc:  # noqa: BLE001 - any failure of the zone is the value's problem
        return Untimed(Fault.BROKEN_ZONE, exc)
