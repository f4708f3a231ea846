"""A Ray cluster of two nodes on this machine; a sharded engine with shards on both; one node
lost mid-run. Run as a script (its own Ray cluster, apart from the test session's):

    python -m tests.cluster_scenario DATABASE_URL REDIS_URL

It prints one JSON line with what it saw and exits non-zero if a check failed."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import ray
from ray.cluster_utils import Cluster

from engine.api import Engine
from engine.config import Config
from engine.runtime.cluster import lean_ray
from persistence.audit import run_audit
from persistence.audit_totals import ledger_totals

CALLS = 12
SHARDS = 4
MIN = 60.0
RECOVERY_S_MAX = 120.0
START_ATTEMPTS_MAX = 4


async def retry(fn, what: str):
    """Ask until the engine answers again (shards restarting on the surviving node)."""
    deadline = time.monotonic() + RECOVERY_S_MAX
    while True:
        try:
            return await fn()
        except Exception as e:  # noqa: BLE001 - no answer yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: no answer within {RECOVERY_S_MAX} s: {e}") from e
            await asyncio.sleep(0.2)


async def scenario(cluster: Cluster, worker, database_url: str, redis_url: str) -> dict:
    cfg = Config(
        database_url=database_url,
        redis_url=redis_url,
        namespace="billing-cluster",
        placement="sharded",
        shards=SHARDS,
        clock="manual",
    )
    # SPREAD is best effort: now and then every shard lands on one node, and then there is no
    # node to lose that holds shards. Start again (bounded) until they are on both.
    for _ in range(START_ATTEMPTS_MAX):
        engine = await Engine(cfg).start()
        shards = await engine.inspect("shards")
        if len({s["node_id"] for s in shards}) == 2:
            break
        await engine.stop()
        await asyncio.sleep(1.0)
    out: dict = {"checks": {}}
    try:
        before = {s["shard"]: s["node_id"] for s in shards}
        out["nodes"] = len({n["NodeID"] for n in ray.nodes() if n["Alive"]})
        out["shard_nodes_before"] = len(set(before.values()))
        lost = worker.node_id
        out["shards_on_lost_node"] = sorted(i for i, n in before.items() if n == lost)
        out["writer_on_lost_node"] = (await engine.inspect("writer"))["node_id"] == lost

        # Consecutive payer ids: each shard (user_id % SHARDS) holds some of the calls.
        users = [await engine.create_user(f"u{i}") for i in range(CALLS)]
        listeners = [await engine.create_listener(f"l{i}") for i in range(CALLS)]
        calls = []
        for user, listener in zip(users, listeners, strict=True):
            await engine.top_up(user, 100, idempotency_key="seed")
            calls.append((await engine.start_call(user, listener))["call_id"])
        on_lost = sum(u % SHARDS in out["shards_on_lost_node"] for u in users)
        await engine.advance(2 * MIN)  # minutes 2 and 3
        await engine.sync()

        cluster.remove_node(worker, allow_graceful=False)  # the node fails

        async def moved():
            # The lost node's processes can linger a moment: go on once Ray has restarted
            # its shards elsewhere, so that what follows runs on the survivors only.
            shards = await engine.inspect("shards")
            if any(s["node_id"] == lost for s in shards):
                raise RuntimeError("shards still on the lost node")
            return shards

        after = {s["shard"]: s["node_id"] for s in await retry(moved, "shards moved")}
        await retry(lambda: engine.advance(MIN), "minute 4 after the node was lost")
        recovered = await retry(lambda: engine.inspect("shards"), "shards")
        out["calls_recovered_from_postgres"] = sum(
            s["recovered_calls"] for s in recovered if s["shard"] in out["shards_on_lost_node"]
        )
        ends = [await retry(lambda c=c: engine.end_call(c), f"end call {c}") for c in calls]
        await retry(engine.sync, "sync")

        pool = await engine.pool()
        balances = [
            (await retry(lambda u=u: engine.balance(u), "balance"))["balance_coins"] for u in users
        ]
        minutes = await pool.fetchval(
            "SELECT count(*) FROM ledger WHERE tx_type = 'spend' AND call_id = ANY($1)", calls
        )
        checks = await run_audit(pool)
        totals = await ledger_totals(pool)
        out["shard_nodes_after"] = sorted(set(after.values()))
        out["checks"] = {
            "two nodes": out["nodes"] == 2,
            "shards on both nodes": out["shard_nodes_before"] == 2,
            "shards restarted off the lost node": lost not in after.values(),
            "their calls reloaded from PostgreSQL": out["calls_recovered_from_postgres"] == on_lost
            and on_lost > 0,
            "every call billed 4 minutes once": [e["billed_minutes"] for e in ends] == [4] * CALLS
            and minutes == 4 * CALLS,
            "every payer left with 60 coins": balances == [60] * CALLS,
            "audit clean": all(n == 0 for _, n in checks) and totals["coins_conserved"],
        }
        out["ok"] = all(out["checks"].values())
        return out
    finally:
        await retry(engine.stop, "stop")


def main(database_url: str, redis_url: str) -> int:
    with lean_ray(dashboard=False, logs_to_driver=False):  # as the engine's own Ray starts
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="billing-cluster", log_to_driver=False)
    try:
        out = asyncio.run(scenario(cluster, worker, database_url, redis_url))
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps(out))
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
