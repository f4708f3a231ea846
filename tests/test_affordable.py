"""Minutes affordable (CGRateS's GetMaxUsage): before a call, and during one as the payer's
coins move; on both placements, manual clock."""

import pytest

from actors import InvalidInput
from tests.conftest import OnOneEngine
from tests.helpers import eventually

MIN = 60.0


@pytest.mark.xdist_group("affordable_scenarios")  # in a row on one worker: one engine per placement
class TestAffordableOnOneEngine(OnOneEngine):
    """Scenarios on one engine per placement, each with people of its own."""

    async def test_minutes_affordable_before_and_during_a_call_and_a_top_up_moves_paid_until(
        self, engine
    ):
        user = await engine.create_user("payer")
        listener = await engine.create_listener("listener")
        await engine.top_up(user, 50, idempotency_key="k1")
        assert (await engine.balance(user, call_type="audio"))["minutes_affordable"] == 5
        assert (await engine.balance(user, call_type="video"))["minutes_affordable"] == 0
        assert (await engine.balance(user))["minutes_affordable"] is None
        with pytest.raises(InvalidInput, match="call_type"):
            await engine.balance(user, call_type="fax")

        call = await engine.start_call(user, listener, "audio")  # minute 1 taken: 40 left
        start = call["connected_at"]
        assert call["minutes_affordable"] == 4 and call["paid_until"] == start + 5 * MIN
        await engine.advance(MIN)  # minute 2: 30 left
        await engine.top_up(user, 30, idempotency_key="k2")  # 60: six more minutes
        now = await engine.get_call(call["call_id"])
        assert now["minutes_affordable"] == 6 and now["paid_until"] == start + 8 * MIN
        await engine.advance(7 * MIN)  # minutes 3..8 billed; minute 9 cannot be paid: dropped

        async def dropped():
            out = await engine.get_call(call["call_id"])
            return out if out["status"] == "dropped" else None

        ended = await eventually(dropped, what="the call dropped")
        assert ended["ended_at"] == start + 8 * MIN  # where paid_until said
        assert ended["minutes_affordable"] is None and ended["paid_until"] is None

    async def test_a_low_balance_event_carries_minutes_affordable_and_paid_until(self, engine):
        user = await engine.create_user("payer")
        listener = await engine.create_listener("listener")
        await engine.top_up(user, 30, idempotency_key="k")
        call = await engine.start_call(user, listener, "audio")  # 20 left: two minutes
        await engine.get_call(call["call_id"])  # the payer's host looks again: warned
        await engine.sync()
        low = [e for e in await engine.events(user_id=user) if e["type"] == "low_balance"]
        assert low and low[0]["data"]["minutes_affordable"] == 2
        assert low[0]["data"]["paid_until"] == call["connected_at"] + 3 * MIN
        await engine.end_call(call["call_id"])
