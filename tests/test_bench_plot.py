"""The benchmark's plot draws minute rows and request rows, each on its own panel."""

import time

from bench.cli import plot, request_table


def row(path, calls, rate, note=""):
    return {
        "path": path,
        "calls": calls,
        "call_minutes_per_s": rate,
        "tick_to_commit_ms_p50": 1.0,
        "tick_to_commit_ms_p99": 2.0,
        "note": note,
    }


def test_request_rows_get_their_own_panel_and_table(tmp_path):
    runs = [
        row("sharded", 1_000, 100_000.0),
        row("set_sql", 1_000, 50_000.0),
        row("requests", 1, 50.0, "top_up"),
        row("requests", 50, 200.0, "top_up"),
        row("seed_requests", 50, 900.0, "top_up"),
    ]
    out = tmp_path / "plot.png"
    plot({"machine": {"cpus": 2}, "runs": runs}, str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width = matplotlib.image.imread(out).shape[:2]
    assert width > 1.8 * height  # two panels side by side
    table = request_table(runs[2:])
    assert table.row_count == 3


def test_workload_rows_get_a_traffic_panel_and_a_cpu_per_call_panel(tmp_path):
    def step(rate, calls, p99, sustained):
        extra = {
            "arrival_rate_per_s": rate,
            "concurrent_at_60s_minutes": calls * 60,
            "sustained": sustained,
            "cpu_ms_per_call": {"driver": 0.5, "shard:0": 0.4, "machine (busy)": 1.4},
        }
        return row("workload", calls, rate * 10.0) | {"tick_to_commit_ms_p99": p99, "extra": extra}

    out = tmp_path / "workload.png"
    runs = [step(500, 5_000, 40.0, True), step(1_000, 10_000, 140.0, False)]
    plot({"machine": {"cpus": 2}, "runs": runs}, str(out))
    import matplotlib.image

    height, width = matplotlib.image.imread(out).shape[:2]
    assert width > 1.8 * height  # the traffic and the CPU, side by side


def test_workload_lateness_counts_only_the_minutes_billed_between_two_looks():
    from bench.workload import lateness

    before = {0: 100, 10: 5}
    after = {0: 190, 10: 15, 50: 0, 900: 1}
    minutes, p99, worst = lateness(before, after)
    assert minutes == 101  # 90 + 10 + 1, the step's own
    assert p99 == 10.0 and worst == 900.0
    assert lateness(after, after) == (0, 0.0, 0.0)


def test_workload_rows_show_what_each_step_sustained():
    from rich.console import Console

    from bench.cli import workload_table

    extra = {
        "arrival_rate_per_s": 200,
        "concurrent_at_60s_minutes": 120_000,
        "late_ms_p99": 60.0,
        "late_ms_max": 1_200.0,
        "refused": 0,
        "sustained": False,
    }
    console = Console(width=200, record=True)
    console.print(workload_table([row("workload", 2_000, 2_000.0, "200/s") | {"extra": extra}]))
    text = console.export_text()
    assert "120,000" in text and "60 / 1200" in text and "no" in text


async def test_workload_counts_cpu_per_call_by_process_postgres_included(pool):
    """A step's CPU by process: the driver's own, PostgreSQL's (its backends do this test's
    queries), the machine's; per call, and shown by part."""
    from rich.console import Console

    from bench.cli import workload_cpu_table
    from bench.workload import CpuWatch

    watch = CpuWatch({})
    before = watch.sample()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # the driver burns 0.3 s of CPU
        pass
    for _ in range(200):
        await pool.fetchval("SELECT count(*) FROM generate_series(1, 20000)")
    used = CpuWatch.per_call(before, watch.sample(), 100)
    driver = used["cpu_s"]["driver (load and Engine client)"]
    assert driver >= 0.29 and used["cpu_ms_per_call"]["driver (load and Engine client)"] >= 2.9
    assert used["cpu_s"]["postgresql"] > 0
    assert used["cpu_s"]["machine (busy)"] >= driver
    assert CpuWatch.per_call(before, before, 0)["cpu_ms_per_call"]["postgresql"] is None
    console = Console(width=200, record=True)
    console.print(workload_cpu_table([{"extra": {"arrival_rate_per_s": 200, **used}}]))
    text = console.export_text()
    assert "postgresql" in text and "200" in text


async def test_the_copy_ceiling_copies_the_columns_the_writer_copies(pool):
    """`copy_limit` is the ceiling the engine is measured against: it must COPY what the
    writer COPYs into a table shaped like the ledger (it broke when the ledger grew columns)."""
    from bench.paths import copy_limit

    run = await copy_limit(pool, 50, 2)
    assert run.path == "copy_limit" and run.calls == 50 and run.call_minutes_per_s > 0
    assert await pool.fetchval("SELECT to_regclass('bench_ledger')") is None  # cleaned up


async def test_the_load_generator_alone_is_measured_and_the_driver_row_splits_into_it(
    monkeypatch,
):
    """The driver is the load generator and the Engine client in one process: the load
    generator driving an engine that answers at once costs CPU of its own, and a step's driver
    row splits into that and the client's (never a negative share)."""
    from bench import workload

    monkeypatch.setattr(workload, "LOAD_ALONE_S", 1.0)
    people = list(range(1, 201))
    alone = await workload.load_alone_ms_per_call(200, people, [p + 1000 for p in people])
    assert 0 < alone < 100
    per = {workload.DRIVER: 1.0, "shard:0": 2.0}
    split = workload.split_driver(per, 0.25)
    assert split == {workload.LOAD_ALONE: 0.25, workload.CLIENT: 0.75, "shard:0": 2.0}
    capped = workload.split_driver(per, 5.0)
    assert (capped[workload.LOAD_ALONE], capped[workload.CLIENT]) == (1.0, 0.0)
    assert workload.split_driver({"shard:0": 2.0}, 0.25) == {"shard:0": 2.0}


def test_a_process_that_exits_between_two_samples_never_makes_its_part_negative():
    """A PostgreSQL backend that ended between a step's samples is left out (its CPU is
    unknown), one that started since counts whole, and a reused pid counts from zero."""
    from bench.workload import MACHINE, CpuWatch

    before = {("postgresql", 10, 1.0): 5.0, ("postgresql", 11, 1.0): 2.0, (MACHINE,): 100.0}
    after = {("postgresql", 11, 1.0): 2.5, ("postgresql", 12, 9.0): 0.5, (MACHINE,): 101.0}
    assert CpuWatch.per_call(before, after, 10)["cpu_s"] == {"postgresql": 1.0, MACHINE: 1.0}
    reused = {("postgresql", 10, 7.0): 0.25, (MACHINE,): 100.0}
    assert CpuWatch.per_call(before, reused, 1)["cpu_s"]["postgresql"] == 0.25
