"""Random interleavings of top-ups, call starts, ticks, hang-ups, withdrawals (payouts paid or
rejected), refunds and repeated deliveries, on the plain classes; every rule of money is
checked after every step."""

import json
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actors import BillingError, Call, Wallet
from actors import buckets as bk
from actors.money import check_transfer, to_ms
from actors.transfer_ids import refund_id

USERS = (1, 2, 3)
LISTENERS = (10, 11)
T0 = 1_800_000_000.0
MINUTE = 60.0


class Billing(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.wallets = {u: Wallet(u, "user") for u in USERS}
        self.wallets |= {v: Wallet(v, "listener") for v in LISTENERS}
        self.ledger = {}  # transfer_id -> Transfer: every transfer ever produced
        self.calls = {}
        self.settled = {}
        self.now = T0
        self.next_call_id = 1
        self.deliveries = []  # (kind, args) to deliver again later
        self.next_payout_id = 1
        self.payouts = {}  # payout id -> (listener, paise, transfer id of its hold)
        self.refunded = Counter()  # call id -> minutes refunded
        self.grants = {u: [] for u in USERS}  # buckets as granted, to draw again (replay)

    def post(self, transfers):
        for w in self.wallets.values():  # what expired while billing goes with it
            for _, _, gone, _ in w.take_expired():
                transfers = [*transfers, *gone]
        for t in transfers:
            check_transfer(t)
            assert t.transfer_id not in self.ledger, f"{t.transfer_id} produced twice"
            self.ledger[t.transfer_id] = t

    def settle(self, s):
        if s is None:
            return
        payer = self.wallets[s.user_id]
        assert payer.close_call(s.call_id, s.coins_returned) == s.billed_minutes
        self.post(s.transfers())  # the listener's credit (the default card returns nothing)
        assert self.wallets[s.listener_id].release_listener(s.call_id, s.earnings_paise)
        self.settled[s.call_id] = s
        self.deliveries.append(("release", (s.listener_id, s.call_id, s.earnings_paise)))

    @rule(
        user=st.sampled_from(USERS),
        amount=st.integers(1, 200),
        key=st.integers(0, 5),
        tx=st.sampled_from(("purchase", "bonus", "referral_bonus")),
    )
    def top_up(self, user, amount, key, tx):
        try:
            t = self.wallets[user].apply_external(f"k{key}", tx, amount, 0)
        except BillingError:
            return
        if t is not None:
            self.post([t])

    @rule(
        user=st.sampled_from(USERS),
        amount=st.integers(1, 100),
        key=st.integers(0, 3),
        lasts=st.floats(1, 600, allow_nan=False),
    )
    def grant_bucket(self, user, amount, key, lasts):
        """A bonus that expires, at `now`: what is due by then billed and expired first, and
        after every debit before it, as its host does."""
        w = self.wallets[user]
        for call in [c for c in self.calls.values() if c.user_id == user and not c.settlement]:
            transfers, last, short = w.bill_minutes(call.call_id, call.minute_at(self.now))
            self.post(transfers)
            self.settle(call.after_billing(last, short, self.now))
        at = w.grant_ms(to_ms(self.now))
        self.now = max(self.now, at / 1000)  # the wallet's time moved on, as a host stamps it
        w.expire_through(at, bk.position(at, bk.MINUTE) + 1)
        self.post([])
        try:
            t = w.apply_external(f"g{key}", "bonus", amount, at, expires_ms=at + to_ms(lasts))
        except BillingError:
            return
        if t is not None:
            self.grants[user].append(next(b[:] for b in w.buckets if b[bk.ID] == t.transfer_id))
            self.post([t])

    @rule(listener=st.sampled_from(LISTENERS), amount=st.integers(1, 500), key=st.integers(0, 5))
    def withdraw(self, listener, amount, key):
        try:
            payout_id = self.next_payout_id
            t = self.wallets[listener].apply_external(f"w{key}", "withdraw", amount, 0, payout_id)
        except BillingError:
            return
        if t is not None:
            self.next_payout_id += 1
            self.payouts[payout_id] = (listener, amount, t.transfer_id)
            self.post([t])

    @precondition(lambda self: self.payouts)
    @rule(data=st.data(), rejected=st.booleans())
    def settle_payout(self, data, rejected):
        payout_id = data.draw(st.sampled_from(sorted(self.payouts)))
        listener, amount, _ = self.payouts[payout_id]
        w = self.wallets[listener]
        if payout_id not in w.payouts:  # settled before: the wallet no longer holds it
            return
        assert w.payouts[payout_id] == amount
        void = w.settle_payout(payout_id, "rejected" if rejected else "paid", 0)
        assert (void is not None) == rejected and payout_id not in w.payouts
        if void is not None:
            assert void.amount == amount
            self.post([void])

    @precondition(lambda self: self.settled)
    @rule(data=st.data(), minutes=st.integers(1, 5), pays=st.booleans(), key=st.integers(0, 3))
    def refund(self, data, minutes, pays, key):
        s = self.settled[data.draw(st.sampled_from(sorted(self.settled)))]
        if minutes > s.billed_minutes - self.refunded[s.call_id]:
            return  # the listener's host refuses it (RefundExceedsBilled)
        rid = refund_id(s.call_id, f"r{key}")
        if rid in self.ledger:
            assert self.wallets[s.user_id].refund_coins(rid, 1, s.call_id, 0) is None
            return
        call = self.calls[s.call_id]
        if pays:
            try:
                back = self.wallets[s.listener_id].claw_back(
                    rid, minutes * call.rate_paise, s.call_id, 0
                )
            except BillingError:
                return
            self.post([back])
        coins = self.wallets[s.user_id].refund_coins(rid, minutes * call.rate_coins, s.call_id, 0)
        self.post([coins])
        self.refunded[s.call_id] += minutes

    @rule(user=st.sampled_from(USERS), listener=st.sampled_from(LISTENERS), video=st.booleans())
    def start_call(self, user, listener, video):
        rate_coins, rate_paise = (60, 600) if video else (10, 100)
        call = Call(
            self.next_call_id,
            user,
            listener,
            "video" if video else "audio",
            "basic",
            rate_coins,
            rate_paise,
            self.now,
            MINUTE,
            240,
        )
        self.next_call_id += 1
        try:
            self.wallets[listener].reserve_listener(call.call_id)
        except BillingError:
            return
        try:
            first = self.wallets[user].open_call(
                call.call_id, rate_coins, 1, call.connected_ms, call.minute_ms
            )
        except BillingError:
            self.wallets[listener].cancel_reservation(call.call_id)
            self.post([])  # a bucket that expired by then left anyway
            return
        self.post([first])
        call.after_billing(1, False, self.now)
        self.calls[call.call_id] = call

    @rule(seconds=st.floats(0, 400, allow_nan=False))
    def advance(self, seconds):
        self.now += seconds
        for call in list(self.calls.values()):
            if call.settlement is not None:
                continue
            through = call.minute_at(self.now)
            transfers, last, short = self.wallets[call.user_id].bill_minutes(call.call_id, through)
            self.post(transfers)
            self.deliveries.append(("bill", (call.user_id, call.call_id, through)))
            self.settle(call.after_billing(last, short, self.now))

    @precondition(lambda self: self.calls)
    @rule(data=st.data())
    def hang_up(self, data):
        call = data.draw(st.sampled_from(sorted(self.calls.values(), key=lambda c: c.call_id)))
        self.settle(call.hang_up(self.now))
        assert call.hang_up(self.now) is None  # a second hang-up settles nothing

    @precondition(lambda self: self.deliveries)
    @rule(data=st.data())
    def deliver_again(self, data):
        kind, args = data.draw(st.sampled_from(self.deliveries))
        if kind == "bill":
            user_id, call_id, through = args
            if call_id in self.wallets[user_id].calls:
                transfers, _, _ = self.wallets[user_id].bill_minutes(call_id, through)
                assert transfers == [], "a repeated tick billed again"
        else:
            listener_id, call_id, earned = args
            assert not self.wallets[listener_id].release_listener(call_id, earned)

    @invariant()
    def no_balance_below_zero(self):
        for w in self.wallets.values():
            assert w.balance_coins >= 0 and w.earnings_paise >= 0

    @invariant()
    def balances_are_the_sum_of_their_transfers(self):
        coins, paise = Counter(), Counter()
        for t in self.ledger.values():
            (coins if t.unit == "coins" else paise)[t.user_id] += t.amount
        for uid, w in self.wallets.items():
            assert w.balance_coins == coins[uid]
            assert w.earnings_paise == paise[uid]

    @invariant()
    def buckets_hold_what_their_grants_less_the_draws_earliest_expiry_first_leave(self):
        for user, grants in self.grants.items():
            w = self.wallets[user]
            assert sum(b[bk.LEFT] for b in w.buckets) <= w.balance_coins
            debits = [
                (bk.position(t.at_ms, bk.OUTSIDE if t.minute_no == 1 else bk.MINUTE), -t.amount)
                for t in self.ledger.values()
                if t.user_id == user and t.tx_type == "spend"
            ]
            replayed = [g[:] for g in grants]
            bk.replay(replayed, sorted(debits))
            held = {b[bk.ID]: b[bk.LEFT] for b in w.buckets}
            for b in replayed:
                expired = self.ledger.get(bk.expire_id(b[bk.ID]))
                if b[bk.ID] in held:
                    assert held[b[bk.ID]] == b[bk.LEFT]
                else:  # expired: its rest left, exactly
                    assert (0 if expired is None else -expired.amount) == b[bk.LEFT]

    @invariant()
    def pending_payouts_hold_exactly_their_withdrawals_and_refunds_stay_within_billed(self):
        for payout_id, (listener, amount, hold) in self.payouts.items():
            held = self.wallets[listener].payouts.get(payout_id)
            assert held in (None, amount) and self.ledger[hold].amount == -amount
            void = self.ledger.get(f"payout:{payout_id}:void")
            assert held is None or void is None  # released only once settled
        for cid, n in self.refunded.items():
            assert n <= self.settled[cid].billed_minutes

    @invariant()
    def each_minute_billed_once_and_each_settled_call_credited_once(self):
        minutes = Counter()
        for t in self.ledger.values():
            if t.tx_type == "spend":
                minutes[t.call_id] += 1
        for cid, call in self.calls.items():
            assert minutes[cid] == call.billed_minutes
        for cid, s in self.settled.items():
            earn = self.ledger.get(f"earn:call:{cid}")
            assert (earn.amount if earn else 0) == s.billed_minutes * self.calls[cid].rate_paise


TestBilling = Billing.TestCase
TestBilling.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers() | st.just("next_tick_at"), inner)
    ),
    max_leaves=20,
)


@given(json_like)
def test_inspect_shows_any_state_with_times_made_readable_and_never_crashes(value):
    # inspect prints whatever an actor reports: counters keyed by peer shard number, times out
    # of range, nested lists; none of it may crash the view (issue 20).
    from actors.times import iso_times

    shown = iso_times(value)
    json.dumps(shown, default=str)  # printable
    if (
        isinstance(value, dict)
        and isinstance(value.get("next_tick_at"), int)
        and not (isinstance(value["next_tick_at"], bool))
    ):
        at = value["next_tick_at"]
        if abs(at) < 10**10:
            assert shown["next_tick_at"].endswith("+00:00"), shown


def test_inspect_shows_a_shard_that_released_to_a_peer():
    from actors.times import iso_times

    shard = {"batches": {"releases": {1: {"items": 3}}}, "next_tick_at": 0.0, "ended_at": None}
    shown = iso_times(shard)
    assert shown["batches"]["releases"] == {1: {"items": 3}}
    assert shown["next_tick_at"] == "1970-01-01T00:00:00.000+00:00" and shown["ended_at"] is None
