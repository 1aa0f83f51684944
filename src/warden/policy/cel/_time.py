"""CEL timestamps and durations, carried as aware ``datetime`` and ``timedelta``.

Python's types have microsecond resolution, so nanosecond digits in literals are
truncated; everything else follows cel-go: Go duration syntax (``"1h30m"``), RFC 3339
timestamps, the ``getX()`` accessors with an optional time zone, and range errors for
results outside years 0001-9999 or durations beyond +/-10000 years.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from warden.policy.cel._values import (
    DURATION,
    TIMESTAMP,
    check_int,
    fail,
    no_overload,
    type_name,
)

_MAX_DURATION = timedelta(seconds=315_576_000_000)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_UNIT_MICROS = {
    "ns": 0.001,
    "us": 1.0,
    "µs": 1.0,  # Go accepts both micro signs
    "μs": 1.0,
    "ms": 1_000.0,
    "s": 1_000_000.0,
    "m": 60_000_000.0,
    "h": 3_600_000_000.0,
}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_FIXED_ZONE = re.compile(r"([+-]?)(\d{2}):(\d{2})")


def check_duration(value: timedelta) -> timedelta:
    if -_MAX_DURATION <= value <= _MAX_DURATION:
        return value
    fail("duration out of range")


def parse_duration(text: str) -> timedelta:
    """Parse Go's duration syntax, as cel-go's ``duration()`` does."""
    body = text
    sign = 1
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return timedelta(0)
    if not body:
        fail(f"invalid duration: {text!r}")
    micros = 0.0
    position = 0
    while position < len(body):
        match = _DURATION_PART.match(body, position)
        if match is None or match.group(1) in ("", "."):
            fail(f"invalid duration: {text!r}")
        micros += float(match.group(1)) * _UNIT_MICROS[match.group(2)]
        position = match.end()
    try:
        return check_duration(timedelta(microseconds=sign * micros))
    except OverflowError:
        fail(f"duration out of range: {text!r}")


def parse_timestamp(text: str) -> datetime:
    """Parse an RFC 3339 timestamp, keeping its UTC offset (as Go's time.Parse does)."""
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        fail(f"invalid timestamp: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = (match.group(7) or "").ljust(6, "0")[:6]
    zone: tzinfo = UTC
    if match.group(9):
        offset = timedelta(hours=int(match.group(10)), minutes=int(match.group(11)))
        zone = timezone(-offset if match.group(9) == "-" else offset)
    try:
        stamp = datetime(year, month, day, hour, minute, second, int(fraction), tzinfo=zone)
        stamp.astimezone(UTC)  # rejects instants outside years 1-9999 once in UTC
        return stamp
    except (ValueError, OverflowError):
        fail(f"invalid timestamp: {text!r}")


def timestamp_from_seconds(seconds: int) -> datetime:
    try:
        return _EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        fail("timestamp out of range")


def to_seconds(stamp: datetime) -> int:
    return (stamp - _EPOCH) // timedelta(seconds=1)


def format_timestamp(stamp: datetime) -> str:
    """RFC 3339 with trailing zeros of the fraction trimmed, like Go's RFC3339Nano."""
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    if stamp.microsecond:
        text += "." + f"{stamp.microsecond:06d}".rstrip("0")
    offset = stamp.utcoffset()
    if not offset:
        return text + "Z"
    minutes = offset // timedelta(minutes=1)
    sign = "-" if minutes < 0 else "+"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def format_duration(value: timedelta) -> str:
    micros = value // timedelta(microseconds=1)
    sign = "-" if micros < 0 else ""
    seconds, fraction = divmod(abs(micros), 1_000_000)
    text = f"{sign}{seconds}"
    if fraction:
        text += "." + f"{fraction:06d}".rstrip("0")
    return text + "s"


def arith(op: str, a: Any, b: Any) -> Any:
    na, nb = type_name(a), type_name(b)
    try:
        if op == "+" and na == nb == DURATION:
            return check_duration(a + b)
        if op == "-" and na == nb == DURATION:
            return check_duration(a - b)
        if op == "+" and {na, nb} == {TIMESTAMP, DURATION}:
            return _aware(a + b)
        if op == "-" and na == TIMESTAMP and nb == DURATION:
            return _aware(a - b)
        if op == "-" and na == nb == TIMESTAMP:
            return check_duration(a - b)
    except OverflowError:
        fail(f"timestamp out of range in {op}")
    raise no_overload(f"_{op}_", a, b)


def negate(value: timedelta) -> timedelta:
    return check_duration(-value)


def _aware(value: datetime) -> datetime:
    # A naive datetime from the activation is taken to be UTC.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _zone(name: str) -> tzinfo:
    fixed = _FIXED_ZONE.fullmatch(name)
    if fixed:
        offset = timedelta(hours=int(fixed.group(2)), minutes=int(fixed.group(3)))
        return timezone(-offset if fixed.group(1) == "-" else offset)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        fail(f"unknown time zone: {name!r}")


def _local(stamp: Any, zone: Any, function: str) -> datetime:
    if not isinstance(stamp, datetime) or (zone is not None and type(zone) is not str):
        raise no_overload(function, stamp, *(() if zone is None else (zone,)))
    aware = stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)
    return aware.astimezone(UTC if zone is None else _zone(zone))


def _duration_part(value: timedelta, unit: timedelta) -> int:
    # Truncate toward zero like Go's Duration.Hours() etc. converted to int.
    micros = value // timedelta(microseconds=1)
    unit_micros = unit // timedelta(microseconds=1)
    whole = abs(micros) // unit_micros
    return -whole if micros < 0 else whole


def _getter(name: str, on_stamp: Any, duration_unit: timedelta | None) -> Any:
    def get(value: Any, zone: Any = None) -> int:
        if isinstance(value, timedelta) and zone is None and duration_unit is not None:
            return _duration_part(value, duration_unit)
        return check_int(int(on_stamp(_local(value, zone, name))), name)

    return get


GETTERS: dict[str, Any] = {
    "getFullYear": _getter("getFullYear", lambda t: t.year, None),
    "getMonth": _getter("getMonth", lambda t: t.month - 1, None),
    "getDate": _getter("getDate", lambda t: t.day, None),
    "getDayOfMonth": _getter("getDayOfMonth", lambda t: t.day - 1, None),
    "getDayOfWeek": _getter("getDayOfWeek", lambda t: (t.weekday() + 1) % 7, None),
    "getDayOfYear": _getter("getDayOfYear", lambda t: t.timetuple().tm_yday - 1, None),
    "getHours": _getter("getHours", lambda t: t.hour, timedelta(hours=1)),
    "getMinutes": _getter("getMinutes", lambda t: t.minute, timedelta(minutes=1)),
    "getSeconds": _getter("getSeconds", lambda t: t.second, timedelta(seconds=1)),
    "getMilliseconds": _getter(
        "getMilliseconds", lambda t: t.microsecond // 1000, timedelta(milliseconds=1)
    ),
}
