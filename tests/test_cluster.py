"""A Ray cluster of two nodes loses one mid-run: its shards restart on the node left, reload
from PostgreSQL, and every call carries on with nothing lost or billed twice."""

import json
import os
import subprocess
import sys

import pytest

# One worker runs the end-to-end tests one after another (pyproject's addopts).
pytestmark = pytest.mark.xdist_group("end_to_end")

SCENARIO_TIMEOUT_S = 300


def test_losing_a_node_loses_no_call_and_bills_no_minute_twice(services, pool):
    # Its own Ray cluster, in its own process: the session's local Ray stays as it is.
    done = subprocess.run(
        [sys.executable, "-m", "tests.cluster_scenario", services.database_url, services.redis_url],
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT_S,
        env=os.environ | {"RAY_ADDRESS": ""},
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    assert lines, done.stderr[-3000:]
    out = json.loads(lines[-1])
    assert out["checks"] and all(out["checks"].values()), out
    assert out["shards_on_lost_node"], out
    assert done.returncode == 0, done.stderr[-3000:]
