"""The independent model of a chaos run: what DESIGN.md's billing policy says every
acknowledged request should have done. Written from the policy, not from the engine's classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def to_ms(seconds: float) -> int:
    """Time as the policy counts it: integer milliseconds (rounded)."""
    return round(seconds * 1000)


@dataclass
class ModelCall:
    call_id: int
    user: int
    listener: int
    rate_coins: int
    rate_paise: int
    connected_at: float
    minutes: int = 1
    status: str = "ongoing"
    reason: str | None = None
    refunded: int = 0  # minutes refunded
    # The price's plan: (increment_s, free_s, earnings rule, share_pct, coin_value_paise);
    # the default is whole minutes, earnings by tier.
    plan: tuple = (60, 0, "tier", None, None)
    charged: int = 0  # coins the end charged (the rest of the prepaid minutes went back)
    earned: int = 0  # paise the listener earned
    refunded_coins: int = 0
    free: int = 0  # minutes an offer pays (the platform pays the listener for them)
    grace_ms: int = 0  # a minute the payer cannot pay waits this long for a credit
    waiting_ms: int | None = None  # since when (its due time), while it waits


@dataclass
class Model:
    """What the ledger must say: minute k of a call is due at connected_at + (k-1)·minute and is
    paid if the payer has the coins, else the call drops at that boundary; minute 1 is paid at
    the start; a call ends at its maximum length; a hang-up keeps the started minute; at the
    end the price charges its increments of the time the call lasted (nothing under its free
    seconds), the prepaid rest goes back to the payer and the listener earns the charged time
    by the rule, once; an idempotency key applies once."""

    minute_s: float
    max_minutes: int
    coins: dict[int, int] = field(default_factory=dict)
    paise: dict[int, int] = field(default_factory=dict)
    externals: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    calls: dict[int, ModelCall] = field(default_factory=dict)
    in_call: dict[int, int] = field(default_factory=dict)  # party -> call id
    payouts: dict[int, list] = field(default_factory=dict)  # id -> [listener, paise, status]
    refunds: dict[str, tuple] = field(default_factory=dict)  # key -> (call, minutes, pays)
    refunded: dict[str, tuple] = field(default_factory=dict)  # key -> (coins, paise)
    # user -> buckets of bonus coins that expire: [coins left, expires at, key], first to
    # expire first
    buckets: dict[int, list] = field(default_factory=dict)

    def external(
        self, who: int, key: str, tx_type: str, amount: int, t: float, expires=None
    ) -> str:
        """'applied', 'repeat', or the refusal: 'conflict', 'insufficient'. Everything due by
        `t` happens first (rule 9). A bonus that `expires` (a time) is a bucket: coins are
        taken from the bucket that expires first, then from the rest; at its expiry what is
        left of it goes."""
        self.bill(t)
        tid = f"ext:{who}:{key}"
        if tid in self.externals:
            return "repeat" if self.externals[tid] == (who, tx_type, amount) else "conflict"
        if tx_type == "spend":
            if self.coins[who] < amount:
                return "insufficient"
            self._take(who, amount)
        elif tx_type == "withdraw":
            if self.paise[who] < amount:
                return "insufficient"
            self.paise[who] -= amount
        else:
            self.coins[who] += amount
            if expires is not None:
                self.buckets.setdefault(who, []).append([amount, expires, key])
                self.buckets[who].sort(key=lambda b: (b[1], f"ext:{who}:{b[2]}"))
        self.externals[tid] = (who, tx_type, amount)
        if tx_type not in ("spend", "withdraw"):
            self.credit(who, t)
        return "applied"

    def _take(self, who: int, amount: int) -> None:
        self.coins[who] -= amount
        for b in self.buckets.get(who, ()):
            take = min(b[0], amount)
            b[0] -= take
            amount -= take

    def _expire(self, who: int, t: float) -> None:
        """The buckets of `who` that expire by `t` go, with what is left of them."""
        held = self.buckets.get(who)
        while held and held[0][1] <= t:
            self.coins[who] -= held.pop(0)[0]

    def withdrawn(self, payout_id: int, listener: int, paise: int) -> None:
        """A withdrawal applied: its paise are held by a pending payout."""
        self.payouts.setdefault(payout_id, [listener, paise, "pending"])

    def settle(self, payout_id: int, outcome: str, t: float) -> str:
        """'applied', 'repeat', or 'settled' (the other outcome was applied before): a
        rejected payout's paise go back to its listener."""
        self.bill(t)
        p = self.payouts[payout_id]
        if p[2] != "pending":
            return "repeat" if p[2] == outcome else "settled"
        p[2] = outcome
        if outcome == "rejected":
            self.paise[p[0]] += p[1]
        return "applied"

    def refund(self, key: str, call_id: int, minutes, pays: bool, t: float) -> tuple[str, int]:
        """('applied' | 'repeat', minutes) or a refusal: 'ongoing', 'exceeds', 'insufficient',
        'conflict'. Coins back to the payer at the call's rate, and unless the listener does
        not pay, the same minutes' paise back from the listener, never below zero."""
        self.bill(t)
        c = self.calls[call_id]
        if key in self.refunds:
            _, done, done_pays = self.refunds[key]
            same = done_pays == pays and minutes in (None, done)
            return ("repeat" if same else "conflict"), done
        if c.status == "ongoing":
            return "ongoing", 0
        left = c.minutes - c.refunded
        n = left if minutes is None else minutes
        coins = min(n * c.rate_coins, c.charged - c.refunded_coins)  # never more than charged
        if n > left or n <= 0 or coins <= 0:
            return "exceeds", 0
        paise = coins * c.earned // c.charged if pays else 0  # as earned, in proportion
        if self.paise[c.listener] < paise:
            return "insufficient", 0
        self.paise[c.listener] -= paise
        self.coins[c.user] += coins
        self.credit(c.user, t)
        c.refunded += n
        c.refunded_coins += coins
        self.refunded[key] = (coins, paise)
        self.refunds[key] = (call_id, n, pays)
        return "applied", n

    def credit(self, who: int, t: float) -> None:
        """A credit to `who` at `t` pays the minute each of their calls waits on in its grace,
        if the coins now do, at `t` (DESIGN.md, "Grace at the cut-off")."""
        for c in sorted(self.calls.values(), key=lambda c: c.waiting_ms or 0):
            if c.user != who or c.status != "ongoing" or c.waiting_ms is None:
                continue
            if to_ms(t) < c.waiting_ms + c.grace_ms and self.coins[who] >= c.rate_coins:
                self._take(who, c.rate_coins)
                c.minutes += 1
                c.waiting_ms = None

    def start_refusal(self, user: int, listener: int, rate_coins: int, t: float) -> str | None:
        self.bill(t)
        if user in self.in_call or listener in self.in_call:
            return "busy"
        if self.coins[user] < rate_coins:
            return "insufficient"
        return None

    def start(
        self, call_id: int, user, listener, rate_coins, rate_paise, t: float, plan=None,
        free: int = 0, grace_ms: int = 0,
    ):  # fmt: skip
        if not free:  # minute 1 is the offer's
            self._take(user, rate_coins)
        c = ModelCall(call_id, user, listener, rate_coins, rate_paise, t, free=free,
                      grace_ms=grace_ms)  # fmt: skip
        self.calls[call_id] = c
        if plan is not None:
            c.plan = plan
        self.in_call[user] = self.in_call[listener] = call_id

    def bill(self, t: float) -> None:
        for c in list(self.calls.values()):
            if c.status == "ongoing":
                self._bill(c, t)
        for who in self.buckets:
            self._expire(who, t)

    def _bill(self, c: ModelCall, t: float) -> None:
        # In integer milliseconds, as the engine, its ledger and the audit count time: a start
        # read back from PostgreSQL is rounded to the ms and a clock time is not, so in float
        # seconds a hang-up a minute after a start could fall a fraction of a ms short of it.
        elapsed_ms, minute_ms = to_ms(t) - to_ms(c.connected_at), to_ms(self.minute_s)
        due = max(1, min(elapsed_ms // minute_ms + 1, self.max_minutes))
        while c.minutes < due:
            self._expire(c.user, c.connected_at + c.minutes * self.minute_s)  # its start
            if c.minutes < c.free:  # the offer pays it
                c.minutes += 1
                continue
            if self.coins[c.user] < c.rate_coins:  # it ends at the boundary it cannot pay
                boundary = c.minutes * minute_ms
                if elapsed_ms < boundary + c.grace_ms:  # unless a credit comes in its grace
                    c.waiting_ms = to_ms(c.connected_at) + boundary
                    return
                self._settle(c, "dropped", "insufficient_coins", boundary)
                return
            self._take(c.user, c.rate_coins)
            c.minutes += 1
        if elapsed_ms >= self.max_minutes * minute_ms:
            self._settle(c, "dropped", "expired", self.max_minutes * minute_ms)

    def end(self, call_id: int, t: float) -> None:
        self.bill(t)
        c = self.calls[call_id]
        if c.status == "ongoing":
            self._settle(c, "completed", "hangup", to_ms(t) - to_ms(c.connected_at))

    def _settle(self, c: ModelCall, status: str, reason: str, lasted_ms: int) -> None:
        """The end: charged what the price says for `lasted_ms` (DESIGN.md, "Price plans"), the
        prepaid rest back to the payer, the listener's earnings for the charged time."""
        c.status, c.reason = status, reason
        increment, free, rule, share_pct, coin_value = c.plan
        minute_ms = to_ms(self.minute_s)
        if lasted_ms * 60 < free * minute_ms:  # e < free_s, e = lasted_ms * 60 / minute_ms
            charged_s = 0
        else:
            charged_s = min(
                60 * c.minutes, increment * (lasted_ms * 60 // (minute_ms * increment) + 1)
            )
        c.charged = -(-c.rate_coins * charged_s // 60)
        if rule == "tier":
            c.earned = c.rate_paise * charged_s // 60
        else:
            c.earned = c.charged * coin_value * share_pct // 100
        # An offer paid its free minutes and pays its part of the charge; the payer the rest.
        offered = min(c.charged, c.free * c.rate_coins)
        paid = (c.minutes - min(c.minutes, c.free)) * c.rate_coins
        self.coins[c.user] += paid - (c.charged - offered)
        c.waiting_ms = None
        self.paise[c.listener] += c.earned
        self.in_call.pop(c.user, None)
        self.in_call.pop(c.listener, None)
