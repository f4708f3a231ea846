"""What a chaos step asks: a third of the users act (start, hang up, top up, spend, refund an
ended call), some listeners withdraw or have a payout settled, and now and then a request is
delivered twice or late. Drawn from the run's
seed, so that a seed's requests stay what they were."""

from __future__ import annotations

import time

from engine.cli.chaos.answers import ChaosRequests
from engine.cli.chaos.payouts_refunds import PayoutsAndRefunds

STEP_SECONDS = 20.0  # clock time between batches


class Workload:
    """The requests of one step, as coroutines to run together."""

    def __init__(self, requests: ChaosRequests, payouts: PayoutsAndRefunds) -> None:
        self.requests, self.payouts = requests, payouts
        self.rng, self.model, self.result = requests.rng, requests.model, requests.result

    def plan(self) -> list:
        rng, m, r = self.rng, self.model, self.requests
        requests = []
        busy_now: set[int] = set()
        now = time.monotonic()
        r.quarantined = {p: t for p, t in r.quarantined.items() if t > now}
        free_listeners = [p for p in r.listeners if p not in m.in_call and p not in r.quarantined]
        rng.shuffle(free_listeners)
        for user in rng.sample(r.users, k=max(1, len(r.users) // 3)):
            busy_now.add(user)
            if user in m.in_call:
                waiting = m.calls[m.in_call[user]].waiting_ms is not None
                if waiting and rng.random() < 0.6:
                    # a top-up racing the end of the grace its call waits in
                    requests.append(r.external(user, "purchase", rng.randint(5, 40), r.key()))
                elif rng.random() < 0.25:
                    busy_now.add(m.calls[m.in_call[user]].listener)  # its earnings change
                    requests.append(r.end_call(m.in_call[user], self._copies()))
                continue
            roll = rng.random()
            if roll < 0.45 and free_listeners:
                listener = free_listeners.pop()
                busy_now.add(listener)
                kind = "video" if rng.random() < 0.15 else "audio"
                requests.append(r.start_call(user, listener, kind))
            elif roll < 0.8:
                copies = self._copies()  # drawn first: a seed's requests stay what they were
                tx = "bonus" if rng.random() < 0.25 else "purchase"
                # half the bonuses expire, within a few minutes: some during a call
                lasts = rng.uniform(30, 600) if tx == "bonus" and rng.random() < 0.5 else None
                amount = rng.randint(5, 150)
                requests.append(r.external(user, tx, amount, r.key(), copies, lasts))
            elif roll < 0.9:
                requests.append(r.external(user, "spend", rng.randint(1, 60), r.key()))
            elif roll < 0.96:
                refund = self._refund(user, busy_now)
                if refund is not None:
                    if refund[0] in free_listeners:
                        free_listeners.remove(refund[0])
                    requests.append(refund[1])
        return requests + self._listeners_plan(busy_now) + self._late(busy_now)

    def _listeners_plan(self, busy_now: set[int]) -> list:
        """A tenth of the listeners not busy withdraw, or have a pending payout settled."""
        rng, m, r = self.rng, self.model, self.requests
        requests = []
        pending = {}
        for payout_id, (listener, _, status) in m.payouts.items():
            if status == "pending":
                pending.setdefault(listener, []).append(payout_id)
        for listener in r.listeners:
            if listener in busy_now or rng.random() > 0.1:
                continue
            busy_now.add(listener)
            if pending.get(listener) and rng.random() < 0.6:
                outcome = "paid" if rng.random() < 0.6 else "rejected"
                payout_id = rng.choice(pending[listener])
                requests.append(self.payouts.settle(payout_id, outcome, self._copies()))
                continue
            ceiling = max(1, m.paise[listener] + 50)
            requests.append(r.external(listener, "withdraw", rng.randint(1, ceiling), r.key()))
        return requests

    def _late(self, busy_now: set[int]) -> list:
        rng, m, r = self.rng, self.model, self.requests
        requests = []
        # A late delivery: an old request arrives again, after newer ones (changes nothing), or
        # its key comes back with another amount (refused).
        late = [h for h in r.history if h[0] not in busy_now]
        if late and rng.random() < 0.3:
            who, tx, key, amount = rng.choice(late)
            self.result.faults_injected["reordered_delivery"] += 1
            if rng.random() < 0.3:
                amount += 1
            requests.append(r.external(who, tx, amount, key))
        settled = [
            p for p, (who, _, st) in m.payouts.items() if st != "pending" and who not in busy_now
        ]
        if settled and rng.random() < 0.2:  # a settle delivered late: the same or the other way
            self.result.faults_injected["reordered_delivery"] += 1
            payout_id = rng.choice(settled)
            busy_now.add(m.payouts[payout_id][0])
            requests.append(self.payouts.settle(payout_id, rng.choice(("paid", "rejected"))))
        ended = [c.call_id for c in m.calls.values() if c.status != "ongoing"]
        if ended and rng.random() < 0.2:
            self.result.faults_injected["reordered_delivery"] += 1
            requests.append(r.end_call(rng.choice(ended)))
        return requests

    def _refund(self, user: int, busy_now: set[int]):
        """A refund of one of the user's ended calls (some minutes or all, the listener paying
        or not; now and then delivered twice), or None if none can be asked now."""
        rng, r, mb = self.rng, self.requests, self.payouts
        calls = [c for c in mb.refundable(user) if c.listener not in busy_now]
        if not calls:
            return None
        c = rng.choice(calls)
        busy_now.add(c.listener)
        minutes = None if rng.random() < 0.4 else rng.randint(1, c.minutes - c.refunded + 1)
        pays = rng.random() < 0.8
        return c.listener, mb.refund(c.call_id, minutes, pays, r.key(), self._copies())

    def _copies(self) -> int:
        """How many times a request is delivered: twice, now and then (a duplicate)."""
        if self.rng.random() < 0.2:
            self.result.faults_injected["duplicate_delivery"] += 1
            return 2
        return 1
