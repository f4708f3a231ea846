"""The benchmark's plot draws minute rows and request rows, each on its own panel."""

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
