"""Whether a value has a time in UTC: ``customer_session._times``."""

from datetime import UTC, date, datetime, timedelta, timezone, tzinfo

import pytest

from customer_session._times import Fault, Untimed, in_utc

from .conftest import BEYOND_UTC_TIMES, BROKEN_ZONE_TIMES

T0 = datetime(2026, 3, 2, 10, 15, tzinfo=UTC)


class _FailsSecondTime(tzinfo):
    """A zone that gives an offset once, then raises (asked again by the conversion)."""

    def __init__(self) -> None:
        self.asked = 0

    def utcoffset(self, dt: datetime | None) -> timedelta:
        self.asked += 1
        if self.asked > 1:
            raise LookupError("the zone changed its mind")
        return timedelta(hours=1)


class TestInUTC:
    def test_a_utc_time_is_itself(self):
        """A time in UTC is given back as it is."""
        assert in_utc(T0) is T0

    def test_an_aware_time_becomes_the_same_instant_in_utc(self):
        """A time at another offset is the same instant, in UTC."""
        moment = in_utc(datetime(2026, 3, 2, 12, 15, tzinfo=timezone(timedelta(hours=2))))
        assert isinstance(moment, datetime)
        assert moment.tzinfo is UTC
        assert moment == T0

    @pytest.mark.parametrize("value", [None, "2026-03-02T10:15:00Z", date(2026, 3, 2), 1.5])
    def test_a_value_that_is_no_datetime_is_named_so(self, value):
        """A value that is not a datetime has no time in UTC because of that."""
        assert in_utc(value) == Untimed(Fault.NOT_A_DATETIME)

    def test_a_naive_time_is_named_so(self):
        """A naive datetime has no time in UTC because it is naive."""
        assert in_utc(datetime(2026, 3, 2, 10, 15)) == Untimed(Fault.NAIVE)  # noqa: DTZ001 - naive on purpose

    @pytest.mark.parametrize("value", BEYOND_UTC_TIMES)
    def test_a_time_past_the_years_in_utc_is_named_so(self, value):
        """An aware time whose time in UTC falls outside the years 1 to 9999 is named so."""
        assert in_utc(value) == Untimed(Fault.OUTSIDE_YEARS)

    @pytest.mark.parametrize("value", BROKEN_ZONE_TIMES)
    def test_a_time_whose_zone_fails_keeps_the_zones_error(self, value):
        """A time whose zone fails has no time in UTC; what the zone raised comes with it."""
        result = in_utc(value)
        assert isinstance(result, Untimed)
        assert result.fault is Fault.BROKEN_ZONE
        assert isinstance(result.zone_error, Exception)

    def test_a_zone_failing_at_the_conversion_is_a_broken_zone(self):
        """A zone that raises only when the conversion asks it again is a broken zone too."""
        result = in_utc(datetime(2026, 3, 2, 11, 15, tzinfo=_FailsSecondTime()))
        assert isinstance(result, Untimed)
        assert isinstance(result.zone_error, LookupError)


class TestNeeded:
    def test_a_naive_time_must_be_aware(self):
        """A naive time's problem is that it must be an aware datetime."""
        naive = datetime(2026, 3, 2)  # noqa: DTZ001 - naive on purpose
        assert Untimed(Fault.NAIVE).needed(naive) == f"must be an aware datetime, got {naive!r}"

    def test_a_broken_zone_is_worded_as_a_naive_time_with_its_error(self):
        """A broken zone's problem is a naive time's, followed by what the zone raised."""
        untimed = Untimed(Fault.BROKEN_ZONE, RuntimeError("gone"))
        assert untimed.needed(T0) == (
            f"must be an aware datetime, got {T0!r}, whose time zone failed (RuntimeError: gone)"
        )

    def test_a_time_past_the_years_must_be_within_them(self):
        """A time outside the years in UTC must be within them."""
        assert Untimed(Fault.OUTSIDE_YEARS).needed(T0) == (
            f"must be within the years 1 to 9999 in UTC, got {T0!r}"
        )
