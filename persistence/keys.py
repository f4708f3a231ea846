"""Every Redis key and channel the engine uses, in one place (the event stream's too)."""

PREFIX = "billing:"
ONLINE = PREFIX + "presence:online"  # set of user ids with fresh heartbeats
LAST_SEEN = PREFIX + "presence:last_seen"  # zset user id -> last heartbeat (epoch s)
BUSY_UNTIL = PREFIX + "presence:busy_until"  # zset user id -> busy until (epoch s, inf in call)
LOW_BALANCE_CHANNEL = PREFIX + "events:low_balance"
EVENTS_STREAM = PREFIX + "events"  # the committed call events, relayed from PostgreSQL
FAILED_KEYS = PREFIX + "door:failed:"  # + a source address: its wrong API keys this window


def low_balance_channel(redis_url: str | None) -> str:
    """The low-balance channel of the engine on `redis_url`. Keys live in the URL's database,
    but pub/sub channels are server-wide: on a database other than 0 the channel carries its
    number (`billing:events:low_balance:15`), so that engines on one server do not hear each
    other."""
    db = (redis_url or "").rstrip("/").rpartition("/")[2].partition("?")[0]
    if not db.isdigit() or int(db) == 0:
        return LOW_BALANCE_CHANNEL
    return f"{LOW_BALANCE_CHANNEL}:{db}"


def call_key(call_id: int) -> str:
    """Hash caching one ongoing call; removed when the call settles."""
    return f"{PREFIX}call:{call_id}"
