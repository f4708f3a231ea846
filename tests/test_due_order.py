"""Rule 9 on the plain classes: a payer's history depends on what was asked and when, never on
how often something ticked, nor on a crash that lost what was not yet written."""

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from actors import BillingError, Call, Wallet
from actors.due_order import bill_payer_due
from actors.money import to_ms

T0 = 1_800_000_000.0
MINUTE_S = 60.0
RATES = {"audio": 10, "video": 60}
PAYER, LISTENER = 1, 2

ops = st.lists(
    st.tuples(
        st.floats(0, 150, allow_nan=False),  # seconds since the previous operation
        st.one_of(
            st.tuples(st.just("top_up"), st.integers(1, 120)),
            st.tuples(st.just("spend"), st.integers(1, 80)),
            st.tuples(st.just("start"), st.sampled_from(("audio", "video"))),
            st.tuples(st.just("hang_up"), st.integers(0, 3)),
            st.tuples(st.just("tick"), st.just(0)),
            st.tuples(st.just("crash"), st.just(0)),
        ),
    ),
    max_size=30,
)


class Payer:
    """One payer with up to two calls, driven the way a host drives it: every operation first
    has everything due by its time applied."""

    def __init__(self):
        self.wallet = Wallet(PAYER, "user")
        self.calls: dict[int, Call] = {}
        self.ledger: dict[str, tuple] = {}  # what was produced, by transfer id
        self.ended: dict[int, tuple] = {}
        self.durable = None  # (wallet, calls) as of the last write-through
        self.next_id = 1
        self.commit()

    def commit(self):
        self.durable = copy.deepcopy((self.wallet, self.calls, self.ended))

    def crash(self):
        """Lose everything since the last write-through: minutes and drops written behind."""
        self.wallet, self.calls, self.ended = copy.deepcopy(self.durable)

    def post(self, transfers):
        for t in transfers:
            assert self.ledger.setdefault(t.transfer_id, t) == t, "a transfer changed on replay"

    def due(self, t: float):
        out: list = []
        live = [c for c in self.calls.values() if c.settlement is None]
        for s in bill_payer_due(self.wallet, live, to_ms(t), out):
            self.settle(s)
        self.post(out)

    def settle(self, s):
        self.wallet.close_call(s.call_id)
        self.ended[s.call_id] = (s.status, s.end_reason, s.billed_minutes, s.ended_ms)

    def apply(self, op, arg, t: float, step: int):
        if op == "tick":
            self.due(t)
            return
        if op == "crash":
            self.crash()
            return
        self.due(t)
        at_ms = self.wallet.stamp(to_ms(t))
        try:
            if op in ("top_up", "spend"):
                tx = "purchase" if op == "top_up" else "spend"
                t_ = self.wallet.apply_external(f"k{step}", tx, arg, at_ms)
                self.post([t_])
            elif op == "start":
                call = Call(
                    self.next_id, PAYER, LISTENER, arg, "basic", RATES[arg], 100, t, MINUTE_S, 5
                )
                self.next_id += 1
                first = self.wallet.open_call(call.call_id, call.rate_coins, 2, at_ms, 60_000)
                call.after_billing_ms(1, False, at_ms)
                self.calls[call.call_id] = call
                self.post([first])
            elif op == "hang_up":
                live = [c for c in self.calls.values() if c.settlement is None]
                if live:
                    c = live[arg % len(live)]
                    self.settle(c.hang_up(at_ms / 1000))
        except BillingError:
            return
        self.commit()  # an outside input is written through before it is answered

    def outcome(self):
        minutes = sorted(k for k in self.ledger if k.startswith("call:"))
        return self.wallet.balance_coins, self.ended, minutes


def run(steps, keep):
    p, t = Payer(), T0
    for step, (dt_s, (op, arg)) in enumerate(steps):
        t += dt_s
        if op in keep:
            p.apply(op, arg, t, step)
    p.due(t + 10 * MINUTE_S)  # all calls expire by then (5 minutes at most)
    return p


def running_balance_never_negative_in_time_order(p: Payer) -> bool:
    # minutes due before outside inputs at the same instant; credits before debits
    def order(t):
        due = t.call_id is not None and t.minute_no > 1
        return (t.at_ms, 0 if due else 1, -t.amount, t.transfer_id)

    balance = 0
    for tr in sorted(p.ledger.values(), key=order):
        balance += tr.amount
        if balance < 0:
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(ops)
def test_extra_ticks_and_crashes_change_nothing(steps):
    plain = run(steps, keep={"top_up", "spend", "start", "hang_up"})
    ticked = run(steps, keep={"top_up", "spend", "start", "hang_up", "tick"})
    crashed = run(steps, keep={"top_up", "spend", "start", "hang_up", "tick", "crash"})
    assert ticked.outcome() == plain.outcome()
    assert crashed.outcome() == plain.outcome()
    assert running_balance_never_negative_in_time_order(plain)


def test_two_calls_of_one_payer_are_billed_in_the_order_their_minutes_fell_due():
    w = Wallet(PAYER, "user", balance_coins=35)
    a = Call(1, PAYER, LISTENER, "audio", "basic", 10, 100, T0, MINUTE_S, 240)
    b = Call(2, PAYER, 3, "audio", "basic", 10, 100, T0 + 30, MINUTE_S, 240)
    w.open_call(1, 10, 2, a.connected_ms, a.minute_ms)
    a.after_billing_ms(1, False, a.connected_ms)
    w.open_call(2, 10, 2, b.connected_ms, b.minute_ms)
    b.after_billing_ms(1, False, b.connected_ms)
    out: list = []
    ended = bill_payer_due(w, [a, b], to_ms(T0 + 200), out)
    # 15 coins left: a's minute 2 (+60 s) is paid, b's minute 2 (+90 s) cannot be: b drops
    # first, then a drops at +120 s, whatever order the calls were listed in.
    assert [t.transfer_id for t in out] == ["call:1:2"]
    assert [(s.call_id, s.ended_ms - to_ms(T0)) for s in ended] == [(2, 90_000), (1, 120_000)]
