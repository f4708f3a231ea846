"""One time format per surface. The Python API answers times as epoch seconds (floats, to the
millisecond: what `time.time()` compares with). Everything that leaves the process as text
(HTTP answers, the event stream and `/v1/events`, the CLI's JSON) says them in ISO 8601, UTC,
with its offset and milliseconds: `2026-12-01T10:58:20.631+00:00`. A time is a value under a
key ending in `_at` or one of TIME_KEYS; `iso_times` turns every one of them, at any depth."""

from __future__ import annotations

import datetime as dt


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")


TIME_KEYS = frozenset({"at", "paid_until", "valid_from", "valid_until", "grace_until"})


def is_time_key(key) -> bool:
    return isinstance(key, str) and (key.endswith("_at") or key in TIME_KEYS)


def iso_times(value):
    """`value` with every epoch time (a number under a time key) in ISO 8601; anything else,
    a time already text or out of range included, as it is."""
    if isinstance(value, dict):
        return {k: _iso(v) if is_time_key(k) else iso_times(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [iso_times(v) for v in value]
    return value


def _iso(value):
    if not isinstance(value, int | float) or isinstance(value, bool):
        return iso_times(value)
    try:
        return iso(value)
    except (OverflowError, OSError, ValueError):
        return value
