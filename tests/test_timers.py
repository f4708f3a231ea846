"""The shard's timer wheel hands out every entry once, never before it is due."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.host.timers import TimerWheel

times = st.floats(min_value=0, max_value=1e4, allow_nan=False)


@given(
    entries=st.lists(times, max_size=200),
    nows=st.lists(times, min_size=1, max_size=10),
    width=st.sampled_from([0.01, 0.05, 0.3, 7.0]),
    limit=st.integers(min_value=1, max_value=50),
)
def test_takes_exactly_what_is_due_never_early_each_once(entries, nows, width, limit):
    wheel = TimerWheel(width)
    for item, at in enumerate(entries):
        wheel.add(at, item)
    taken: set[int] = set()
    for now in sorted(nows):
        while batch := wheel.take(now, limit):
            assert len(batch) <= limit
            assert all(entries[i] <= now for i in batch), "taken before due"
            assert taken.isdisjoint(batch), "taken twice"
            taken.update(batch)
        due = {i for i, at in enumerate(entries) if at <= now}
        assert taken == due, "a due entry was left behind"
        assert len(wheel) == len(entries) - len(taken)


def test_an_entry_due_exactly_now_is_taken_and_first_at_never_passes_it():
    wheel = TimerWheel(0.05)
    wheel.add(60.0, 1)  # 60 / 0.05 is not exact in binary
    assert wheel.first_at() <= 60.0
    assert wheel.take(59.999, 10) == []
    assert wheel.take(60.0, 10) == [1]
    assert wheel.first_at() is None and len(wheel) == 0


def test_a_bucket_width_must_be_positive():
    with pytest.raises(ValueError, match="bucket width must be positive"):
        TimerWheel(0)


@given(
    entries=st.lists(times, max_size=100),
    dead=st.sets(st.integers(min_value=0, max_value=99)),
    width=st.sampled_from([0.05, 7.0]),
)
def test_purging_the_front_leaves_the_earliest_live_entry_first_and_takes_no_live_one(
    entries, dead, width
):
    wheel = TimerWheel(width)
    for item, at in enumerate(entries):
        wheel.add(at, item)
    purged = wheel.purge_front(lambda item: item not in dead)
    live = [at for item, at in enumerate(entries) if item not in dead]
    assert len(wheel) == len(entries) - purged
    if live:
        # The first bucket is the earliest live entry's (compared as the wheel files it:
        # 0.3 / 0.05 is 5.999... in binary, so 0.3 sits in the bucket opening at 0.25).
        assert wheel.first_at() == math.floor(min(live) / width) * width <= min(live)
    else:
        assert wheel.first_at() is None and len(wheel) == 0
    # Whatever is left comes out as before: every live entry, each once.
    left = wheel.take(float("inf"), len(entries) + 1)
    assert {i for i in left if i not in dead} == {i for i, _ in enumerate(entries) if i not in dead}
