"""A person's statement: their transfers in time order with the balance after each, paged by a
cursor; a call's minutes one row when it ends. Both placements, manual clock."""

import pytest

from actors import InvalidInput, UnknownUser
from tests.conftest import OnOneEngine

MIN = 60.0


async def all_pages(engine, user_id: int, limit: int) -> list[list[dict]]:
    pages, after = [], None
    while True:
        page = await engine.statement(user_id, after=after, limit=limit)
        pages.append(page["transfers"])
        after = page["next_after"]
        if after is None:
            return pages


@pytest.mark.xdist_group("statement_scenarios")  # in a row on one worker: one engine per placement
class TestStatementOnOneEngine(OnOneEngine):
    """Scenarios on one engine per placement, each with people of its own."""

    async def test_a_statement_pages_through_every_transfer_with_the_balance_after_each(
        self, engine
    ):
        user = await engine.create_user("payer")
        listener = await engine.create_listener("listener")
        await engine.top_up(user, 100, idempotency_key="buy")
        await engine.advance(1)
        await engine.top_up(user, 20, "bonus", idempotency_key="gift")
        await engine.advance(1)
        await engine.spend(user, 5, idempotency_key="sticker")
        await engine.advance(1)
        call = await engine.start_call(user, listener, "audio")
        await engine.advance(30)
        await engine.top_up(user, 7, idempotency_key="during")
        await engine.advance(2 * MIN)
        settled = await engine.end_call(call["call_id"])
        await engine.withdraw(listener, settled["earnings_paise"], idempotency_key="payout")
        await engine.sync()

        pages = await all_pages(engine, user, limit=2)
        assert [len(p) for p in pages] == [2, 2, 1]
        rows = [r for p in pages for r in p]
        assert [(r["kind"], r["amount"], r["balance_after"]) for r in rows] == [
            ("purchase", 100, 100),
            ("bonus", 20, 120),
            ("spend", -5, 115),
            ("purchase", 7, 122),
            ("minutes", -30, 92),
        ]
        assert rows[-1]["minutes"] == 3 and rows[-1]["call_id"] == call["call_id"]
        assert rows[-1]["at"] == settled["ended_at"]
        assert [r["at"] for r in rows] == sorted(r["at"] for r in rows)
        assert rows[-1]["balance_after"] == (await engine.balance(user))["balance_coins"]
        one_page = await engine.statement(user, limit=200)
        assert one_page["transfers"] == rows and one_page["next_after"] is None

        earned = (await engine.statement(listener))["transfers"]
        assert [(r["kind"], r["unit"], r["balance_after"]) for r in earned] == [
            ("earn", "paise", settled["earnings_paise"]),
            ("withdraw", "paise", 0),
        ]

    async def test_a_statement_refuses_what_it_cannot_answer_by_name(self, engine):
        user = await engine.create_user("payer")
        for limit in (0, 201, 1.5, "10"):
            with pytest.raises(InvalidInput, match="limit"):
                await engine.statement(user, limit=limit)
        with pytest.raises(InvalidInput, match="after must be a cursor"):
            await engine.statement(user, after="yesterday")
        with pytest.raises(UnknownUser, match="no user with id 987654"):
            await engine.statement(987654)
        assert await engine.statement(user) == {"transfers": [], "next_after": None}
