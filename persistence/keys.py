"""Every Redis key the engine uses, in one place."""

PREFIX = "billing:"
ONLINE = PREFIX + "presence:online"  # set of user ids with fresh heartbeats
LAST_SEEN = PREFIX + "presence:last_seen"  # zset user id -> last heartbeat (epoch s)
BUSY_UNTIL = PREFIX + "presence:busy_until"  # zset user id -> busy until (epoch s, inf in call)
LOW_BALANCE_CHANNEL = PREFIX + "events:low_balance"
EVENTS_STREAM = PREFIX + "events"  # the committed call events, relayed from PostgreSQL


def call_key(call_id: int) -> str:
    """Hash caching one ongoing call; removed when the call settles."""
    return f"{PREFIX}call:{call_id}"
