"""Every minute of a call explained (`Engine.explain_call`), on both placements, manual clock."""

import pytest

from actors import UnknownCall
from engine.explain import clock
from tests.conftest import OnOneEngine
from tests.helpers import eventually

MIN = 60.0


@pytest.mark.xdist_group("explain_scenarios")  # in a row on one worker: one engine per placement
class TestExplainOnOneEngine(OnOneEngine):
    """Scenarios on one engine per placement, each with people of its own."""

    async def test_a_dropped_call_explains_each_minute_the_top_up_between_and_the_rule(
        self, engine
    ):
        user = await engine.create_user("payer")
        listener = await engine.create_listener("listener")
        await engine.top_up(user, 25, idempotency_key="first")
        call = await engine.start_call(user, listener, "audio")  # 10 coins a minute: 15 left
        await engine.advance(30)
        await engine.top_up(user, 7, idempotency_key="during")  # 22
        await engine.advance(MIN)  # minute 2: 12
        await engine.advance(MIN)  # minute 3: 2; minute 4 cannot be paid
        await engine.advance(MIN)

        async def dropped():
            out = await engine.get_call(call["call_id"])
            return out if out["status"] == "dropped" else None

        await eventually(dropped, what="the call dropped")
        await engine.sync()
        out = await engine.explain_call(call["call_id"])

        assert out["call"]["call_id"] == call["call_id"] and out["call"]["status"] == "dropped"
        minutes = out["minutes"]
        assert [m["minute"] for m in minutes] == [1, 2, 3]
        assert [m["balance_after_coins"] for m in minutes] == [15, 12, 2]
        assert all(m["coins"] == 10 for m in minutes)
        start = call["connected_at"]
        assert [m["due_at"] for m in minutes] == [start, start + MIN, start + 2 * MIN]
        for m in minutes:  # billed when due or later, committed after it was billed
            assert m["billed_at"] >= m["due_at"] and m["committed_at"] is not None
        assert [
            (e["tx_type"], e["coins"], e["balance_after_coins"]) for e in out["wallet_events"]
        ] == [("purchase", 7, 22)]  # the first top-up came before the call started: not during it
        end = out["end"]
        assert end["reason"] == "insufficient_coins" and end["at"] == start + 3 * MIN
        assert end["rule"] == (
            f"dropped at {clock(start + 3 * MIN)}: balance 2 coins < rate 10 coins a minute, "
            "so minute 4 could not be paid"
        )

    async def test_a_hung_up_call_names_the_minute_it_ended_in(self, engine):
        user = await engine.create_user("payer")
        listener = await engine.create_listener("listener")
        await engine.top_up(user, 100, idempotency_key="k")
        call = await engine.start_call(user, listener, "audio")
        await engine.advance(MIN + 31)
        settled = await engine.end_call(call["call_id"])
        out = await engine.explain_call(call["call_id"])
        assert [m["minute"] for m in out["minutes"]] == [1, 2]
        started = call["connected_at"] + MIN
        assert out["end"]["rule"] == (
            f"hung up at {clock(settled['ended_at'])}: minute 2 started at {clock(started)}, billed"
        )

    async def test_an_ongoing_call_is_explained_live_marking_what_is_not_committed(self, engine):
        user = await engine.create_user("payer")
        listener = await engine.create_listener("listener")
        await engine.top_up(user, 100, idempotency_key="k")
        call = await engine.start_call(user, listener, "audio")
        await engine.advance(2 * MIN)
        out = await engine.explain_call(call["call_id"])
        assert out["end"] is None and out["call"]["status"] == "ongoing"
        assert [m["minute"] for m in out["minutes"]] == [1, 2, 3]  # billed up to now
        assert out["minutes"][0]["committed_at"] is not None  # minute 1 is written through
        for m in out["minutes"]:
            if m["committed_at"] is None:  # billed by the host, not in the ledger yet
                assert m["balance_after_coins"] is None and m["minute"] > 1
        await engine.sync()
        again = await engine.explain_call(call["call_id"])
        assert [m["balance_after_coins"] for m in again["minutes"]] == [90, 80, 70]
        await engine.end_call(call["call_id"])

    async def test_explaining_a_call_that_does_not_exist_names_it(self, engine):
        with pytest.raises(UnknownCall, match="no call with id 987654"):
            await engine.explain_call(987654)

    async def test_every_inspect_kind_answers_after_cross_host_calls_drops_and_a_restart(
        self, engine
    ):
        """`inspect` as the CLI shows it (the Engine's answer through `iso_times` and JSON)
        never crashes: after calls whose parties live on different hosts, a drop, a hang-up and a
        restart of a payer's host, every kind answers, and an unknown id is refused by name."""
        import json

        from actors import UnknownUser
        from actors.times import iso_times
        from tests.helpers import answered, restart_actor
        from tests.test_time_order import payer_host

        payers = [await engine.create_user(f"p{i}") for i in range(2)]
        listeners = [await engine.create_listener(f"l{i}") for i in range(2)]
        await engine.top_up(payers[0], 15, idempotency_key="short")  # drops after minute 1
        await engine.top_up(payers[1], 100, idempotency_key="long")
        short = await engine.start_call(payers[0], listeners[0])
        long = await engine.start_call(payers[1], listeners[1])
        await engine.advance(MIN)
        await restart_actor(payer_host(engine, payers[1]))
        await eventually(
            lambda: answered(lambda: engine.get_call(long["call_id"])), what="host back"
        )
        await engine.advance(MIN)
        await engine.end_call(long["call_id"])
        kinds = [("shards", None), ("writer", None), ("jobs", None), ("config", None)]
        kinds += [("call", short["call_id"]), ("call", long["call_id"])]
        kinds += [("wallet", p) for p in payers + listeners]
        for kind, ident in kinds:
            shown = json.dumps(iso_times(await engine.inspect(kind, ident)), default=str)
            assert shown and (ident is None or str(ident) in shown), (kind, ident)
        assert (await engine.inspect("call", short["call_id"]))["status"] == "dropped"
        with pytest.raises(UnknownCall, match="no call with id 987654"):
            await engine.inspect("call", 987654)
        with pytest.raises(UnknownUser, match="no user with id 987654"):
            await engine.inspect("wallet", 987654)
