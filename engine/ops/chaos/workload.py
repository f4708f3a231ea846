"""What a chaos step asks: a third of the users act (start, hang up, top up, spend), some
listeners withdraw, and now and then a request is delivered twice or late. Drawn from the run's
seed, so that a seed's requests stay what they were."""

from __future__ import annotations

import time

STEP_SECONDS = 20.0  # clock time between batches


class Workload:
    """Mixed into `Chaos`: the requests of one step, as coroutines to run together."""

    def plan(self) -> list:
        rng, m = self.rng, self.model
        requests = []
        busy_now: set[int] = set()
        now = time.monotonic()
        self.quarantined = {p: t for p, t in self.quarantined.items() if t > now}
        free_listeners = [
            p for p in self.listeners if p not in m.in_call and p not in self.quarantined
        ]
        rng.shuffle(free_listeners)
        for user in rng.sample(self.users, k=max(1, len(self.users) // 3)):
            busy_now.add(user)
            if user in m.in_call:
                if rng.random() < 0.25:
                    busy_now.add(m.calls[m.in_call[user]].listener)  # its earnings change
                    requests.append(self.end_call(m.in_call[user], self._copies()))
                continue
            roll = rng.random()
            if roll < 0.45 and free_listeners:
                listener = free_listeners.pop()
                busy_now.add(listener)
                kind = "video" if rng.random() < 0.15 else "audio"
                requests.append(self.start_call(user, listener, kind))
            elif roll < 0.8:
                copies = self._copies()  # drawn first: a seed's requests stay what they were
                tx = "bonus" if rng.random() < 0.1 else "purchase"
                requests.append(self.external(user, tx, rng.randint(5, 150), self.key(), copies))
            elif roll < 0.9:
                requests.append(self.external(user, "spend", rng.randint(1, 60), self.key()))
        for listener in self.listeners:
            if listener in busy_now or rng.random() > 0.1:
                continue
            busy_now.add(listener)
            ceiling = max(1, m.paise[listener] + 50)
            requests.append(
                self.external(listener, "withdraw", rng.randint(1, ceiling), self.key())
            )
        # A late delivery: an old request arrives again, after newer ones (changes nothing), or
        # its key comes back with another amount (refused).
        late = [h for h in self.history if h[0] not in busy_now]
        if late and rng.random() < 0.3:
            who, tx, key, amount = rng.choice(late)
            self.result.faults_injected["reordered_delivery"] += 1
            if rng.random() < 0.3:
                amount += 1
            requests.append(self.external(who, tx, amount, key))
        ended = [c.call_id for c in m.calls.values() if c.status != "ongoing"]
        if ended and rng.random() < 0.2:
            self.result.faults_injected["reordered_delivery"] += 1
            requests.append(self.end_call(rng.choice(ended)))
        return requests

    def _copies(self) -> int:
        """How many times a request is delivered: twice, now and then (a duplicate)."""
        if self.rng.random() < 0.2:
            self.result.faults_injected["duplicate_delivery"] += 1
            return 2
        return 1
