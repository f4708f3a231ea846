"""Webhooks: an app's endpoint is sent every event of the types it asked for, signed, at least
once, in order per call, retried with bounded exponential backoff for `retry_for_s`, and
disabled (with a `webhook_disabled` event) past it. Deliveries live in PostgreSQL
(persistence/webhooks.py), so an engine that restarts sends what it had not.

The engine's owner (the process that ran `up`) runs the one `Dispatcher`. Each round it queues
each enabled endpoint's new events, then sends, per endpoint, the first pending delivery of
each lane (a call's events; a person's payouts) that is due, up to `in_flight_max` at once:
a lane's next event waits for its last one's 2xx, so an app sees a call's events in order
while other calls' go on.

The body is the event's JSON as `GET /v1/events` gives it. The signature is Stripe's scheme:
`Billing-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>", keyed by the
endpoint's secret>`; a receiver recomputes it and refuses an old `t` (a replay).

A key holder must not make the engine call inside its network: a URL whose host is (or
resolves to) a loopback, private, link-local or otherwise non-global address is refused, when
registered and again before every attempt, unless the operator allows it
(`BILLING_WEBHOOK_PRIVATE_URLS=1`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
import socket
import time
import urllib.parse
from dataclasses import dataclass

from actors.errors import InvalidInput
from actors.times import iso_times
from engine import envvars
from persistence import webhooks as store
from persistence.records import EVENT_TYPES

log = logging.getLogger("billing.webhooks")

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
URL_CHARS_MAX = 2_048
# An endpoint's URL: http(s), a host of letters, digits, '.', '-', an IPv6 literal in [], a
# port; then a path of printable ASCII (an international host in its xn-- form).
URL_PATTERN = r"^https?://[A-Za-z0-9.\-\[\]:]+(/[!-~]*)?$"
WEBHOOKS_MAX = 100  # endpoints at once (not deleted)
SIGNATURE_HEADER = "Billing-Signature"
RESOLVE_TIMEOUT_S = 5.0  # a URL's host that does not resolve within this is refused
QUEUE_SCAN_MAX = 1_000  # events looked at per endpoint and round
PENDING_WINDOW = 500  # pending deliveries looked at per endpoint and round (lanes' heads)
IDLE_S = 0.25  # a dispatcher with nothing due sleeps this long between rounds
RESPONSE_BYTES_MAX = 64 * 1024  # of an endpoint's answer, read (past it the connection closes)


@dataclass(frozen=True)
class WebhookLimits:
    retry_for_s: float = 3 * 24 * 3600.0  # a delivery failing this long disables its endpoint
    backoff_first_s: float = 1.0  # the wait after a first failure; doubled after each
    backoff_max_s: float = 3600.0  # ... up to this
    timeout_s: float = 10.0  # an attempt without an answer by then failed
    in_flight_max: int = 8  # attempts at once per endpoint (one per lane)
    private_urls: bool = False  # allow loopback and private addresses (tests, one machine)

    def __post_init__(self) -> None:
        for name in ("retry_for_s", "backoff_first_s", "backoff_max_s", "timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0):
                raise InvalidInput(f"webhook {name} must be positive, got {value!r}")
        if type(self.in_flight_max) is not int or self.in_flight_max < 1:
            raise InvalidInput(
                f"webhook in_flight_max must be a positive integer, got {self.in_flight_max!r}"
            )

    def backoff_s(self, attempts: int) -> float:
        """The wait after the `attempts`-th failed attempt."""
        return min(self.backoff_max_s, self.backoff_first_s * 2 ** min(attempts - 1, 40))


ENV = {
    "BILLING_WEBHOOK_RETRY_FOR_S": ("retry_for_s", float),
    "BILLING_WEBHOOK_BACKOFF_FIRST_S": ("backoff_first_s", float),
    "BILLING_WEBHOOK_BACKOFF_MAX_S": ("backoff_max_s", float),
    "BILLING_WEBHOOK_TIMEOUT_S": ("timeout_s", float),
    "BILLING_WEBHOOK_IN_FLIGHT_MAX": ("in_flight_max", int),
    "BILLING_WEBHOOK_PRIVATE_URLS": ("private_urls", envvars.flag),
}


def sign(secret: str, body: bytes, t: int) -> str:
    """The `Billing-Signature` header's value for `body` sent at `t` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, body: bytes, header: str, tolerance_s: float = 300.0, now=None) -> bool:
    """What a receiver checks: `header` (Billing-Signature) signs `body` with `secret`, and
    was made within `tolerance_s` of `now` (an old one replayed is refused)."""
    fields = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def body_of(event: dict) -> bytes:
    """A delivery's body: the event as `GET /v1/events` gives it (times in ISO 8601)."""
    return json.dumps(iso_times(event), separators=(",", ":")).encode()


# -- what may be registered ------------------------------------------------------------------


def check_types(event_types) -> list[str]:
    if not isinstance(event_types, list) or not event_types:
        raise InvalidInput(f"event_types must be a non-empty list, got {event_types!r}")
    unknown = [t for t in event_types if t not in EVENT_TYPES]
    if unknown:
        raise InvalidInput(f"event_types: {unknown!r} not among {', '.join(EVENT_TYPES)}")
    return sorted(set(event_types), key=EVENT_TYPES.index)


def _host_of(url) -> tuple[str, int]:
    if not isinstance(url, str) or not 0 < len(url) <= URL_CHARS_MAX:
        raise InvalidInput(f"url must be a URL of at most {URL_CHARS_MAX} characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise InvalidInput(f"url is not a URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"url must be http:// or https:// with a host, got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("url must not carry a user or password (it would be listed)")
    if not re.fullmatch(URL_PATTERN, url):
        raise InvalidInput(f"url must be a host, then printable ASCII, got {url!r}")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


async def _addresses(host: str, port: int) -> list[str]:
    try:
        found = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM),
            RESOLVE_TIMEOUT_S,
        )
    except (OSError, TimeoutError) as e:
        raise InvalidInput(f"url's host {host!r} does not resolve: {e or 'timed out'}") from None
    return sorted({a[4][0] for a in found})


async def check_url(url, private_ok: bool) -> str:
    """`url`, if the engine may send to it; else InvalidInput naming what is wrong."""
    host, port = _host_of(url)
    if private_ok:
        return url
    for address in await _addresses(host, port):
        if _private(address):
            raise InvalidInput(
                f"url's host {host!r} is {address}, a loopback, private or reserved address: "
                "refused (an operator allows such URLs with BILLING_WEBHOOK_PRIVATE_URLS=1)"
            )
    return url


async def register(pool, url, event_types, limits: WebhookLimits) -> dict:
    """A new endpoint and its secret (in this answer only), sent events from now on."""
    types = check_types(event_types)
    url = await check_url(url, limits.private_urls)
    if await store.live_count(pool) >= WEBHOOKS_MAX:
        raise InvalidInput(f"at most {WEBHOOKS_MAX} webhooks at once: delete one first")
    secret = SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)
    return await store.create(pool, url, types, secret) | {"secret": secret}


# -- sending ---------------------------------------------------------------------------------


class Dispatcher:
    """Sends every endpoint its deliveries; one runs, in the engine's owner. `run()` loops
    until cancelled; `round()` is one pass (what tests drive)."""

    def __init__(self, pool_of, limits: WebhookLimits) -> None:
        import httpx  # here: a Config (which holds WebhookLimits) need not import it

        self._http_error = httpx.HTTPError
        self.pool_of = pool_of  # async () -> the asyncpg pool (the process's, reconnecting)
        self.pool = None
        self.limits = limits
        self.http = httpx.AsyncClient(
            timeout=limits.timeout_s,
            follow_redirects=False,  # a redirect is not a 2xx: it could point inside
            headers={"User-Agent": "billing-engine-webhooks/1"},
        )
        self.sent = 0
        self.failed = 0

    async def run(self) -> None:
        """One task per enabled endpoint, so that a slow or dead one (each attempt up to
        `timeout_s`) holds up no other. Every IDLE_S one statement says which endpoints have
        work, and wakes their tasks: an idle engine asks PostgreSQL once, not per endpoint."""
        serving: dict[int, tuple[asyncio.Task, asyncio.Event]] = {}
        try:
            while True:
                try:
                    self.pool = await self.pool_of()
                    hooks = {h["webhook_id"]: h for h in await store.enabled(self.pool)}
                except Exception as e:  # noqa: BLE001 - the dispatcher outlives a bad read
                    log.warning("webhooks could not be read: %s", e)
                    hooks = None  # keep serving the ones served
                if hooks is not None:
                    for webhook_id in [k for k in serving if k not in hooks]:
                        serving.pop(webhook_id)[0].cancel()
                    for webhook_id, hook in hooks.items():
                        if webhook_id not in serving or serving[webhook_id][0].done():
                            wake = asyncio.Event()
                            task = asyncio.get_running_loop().create_task(self._serve(hook, wake))
                            serving[webhook_id] = (task, wake)
                        if hook["has_work"]:
                            serving[webhook_id][1].set()
                await asyncio.sleep(IDLE_S)
        finally:
            tasks = [task for task, _ in serving.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, hook: dict, wake: asyncio.Event) -> None:
        """An endpoint's loop: when woken, rounds until one attempts nothing."""
        while True:
            await wake.wait()
            wake.clear()
            try:
                while await self.endpoint_round(hook):
                    pass
            except Exception as e:  # noqa: BLE001 - an endpoint's loop outlives a bad round
                log.warning("webhook %s round failed: %s", hook["webhook_id"], e)

    async def round(self) -> bool:
        """One pass over every enabled endpoint, side by side (what tests drive); whether
        anything was attempted."""
        self.pool = await self.pool_of()
        hooks = await store.enabled(self.pool)
        return any(await asyncio.gather(*(self.endpoint_round(h) for h in hooks)))

    async def endpoint_round(self, hook: dict) -> bool:
        """Queue the endpoint's new events, then send each lane's first pending one that is
        due; whether anything was attempted."""
        await store.queue(self.pool, hook["webhook_id"], QUEUE_SCAN_MAX)
        return await self._send_due(hook)

    async def _send_due(self, hook: dict) -> bool:
        heads: dict[str, dict] = {}
        for d in await store.pending(self.pool, hook["webhook_id"], PENDING_WINDOW):
            heads.setdefault(d["lane"], d)  # a lane's first pending: the only one it may send
        due = [d for d in heads.values() if d["due"]][: self.limits.in_flight_max]
        if not due:
            return False
        outcomes = await asyncio.gather(*(self._attempt(hook, d) for d in due))
        for d, (status, error) in zip(due, outcomes, strict=True):
            if error is None:
                self.sent += 1
                await store.delivered(self.pool, hook["webhook_id"], d["event_id"], status)
                continue
            self.failed += 1
            failing_s = await store.failed(
                self.pool, hook["webhook_id"], d["event_id"], status, error,
                self.limits.backoff_s(d["attempts"] + 1), self.limits.retry_for_s,
            )  # fmt: skip
            if failing_s >= self.limits.retry_for_s:
                reason = (
                    f"event {d['event_id']} failed for {failing_s:.1f} s "
                    f"(past {self.limits.retry_for_s:g} s): {error}"
                )
                if await store.disable(self.pool, hook["webhook_id"], reason, _now_ms()):
                    log.warning("webhook %s disabled: %s", hook["webhook_id"], reason)
        return True

    async def _attempt(self, hook: dict, d: dict) -> tuple[int | None, str | None]:
        """One POST: (its status, None) on a 2xx, else (status or None, what went wrong)."""
        try:
            await check_url(hook["url"], self.limits.private_urls)  # it may resolve elsewhere now
        except InvalidInput as e:
            return None, str(e)
        body = body_of(d["event"])
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(hook["secret"], body, int(time.time())),
            "Billing-Event-Id": str(d["event_id"]),
            "Billing-Webhook-Id": str(hook["webhook_id"]),
        }
        try:
            async with self.http.stream("POST", hook["url"], content=body, headers=headers) as r:
                # Read the answer's body (up to a bound) so that its connection is used again:
                # one left unread is closed, and every attempt paid a new connection (on a
                # local receiver with a small listen backlog, 1-s SYN retries: 22 deliveries/s).
                read = 0
                async for chunk in r.aiter_raw():
                    read += len(chunk)
                    if read > RESPONSE_BYTES_MAX:
                        break
                if 200 <= r.status_code < 300:
                    return r.status_code, None
                return r.status_code, f"answered {r.status_code}"
        except self._http_error as e:
            return None, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__

    async def close(self) -> None:
        await self.http.aclose()


def _now_ms() -> int:
    return int(time.time() * 1000)
