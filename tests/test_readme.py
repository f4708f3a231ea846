"""The README as a newcomer reads it: self-contained (every path it names is in the repository,
nothing outside it), and its HTTP block runs top to bottom, as pasted, against `up` with the
key `up` printed, each answer a line of JSON."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.test_security import Up
from tests.test_service import free_port

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def test_the_readme_names_nothing_outside_the_repository():
    assert "../" not in README
    named = set(re.findall(r"`((?:docs|tests|bench|engine|actors|persistence)/[\w./-]+)`", README))
    assert {"docs/design.md", "docs/architecture.md", "docs/security.md"} <= named
    missing = [p for p in sorted(named) if not (ROOT / p).exists() and "*" not in p]
    assert missing == []
    for doc in (ROOT / "docs").glob("*.md"):
        assert "../shared" not in doc.read_text(), doc


@pytest.mark.ray
@pytest.mark.xdist_group("end_to_end")
def test_the_readmes_http_block_runs_top_to_bottom_against_up():
    (block,) = [b for b in shell_blocks(README) if "K=bk_" in b]
    up = Up(free_port(), {})
    try:
        script = re.sub(r"^K=bk_\S*", f"K={up.key}", block, flags=re.M)
        script = script.replace("H=http://127.0.0.1:8000", f"H={up.url}")
        assert script.count(up.key) == 1 and up.url in script
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        up.stop()
    assert done.returncode == 0 and not done.stderr, done.stdout + done.stderr
    # Every answer printed is one line of JSON, none an error.
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert all("error" not in a for a in answers), answers
    top_up, ended, wallet, events = answers
    assert top_up["applied"] and top_up["balance_coins"] == 100
    assert (ended["status"], ended["billed_minutes"], ended["coins_spent"]) == ("completed", 1, 10)
    assert wallet["earnings_paise"] == ended["earnings_paise"] > 0
    # This call's events only, bounded: the block ends.
    assert [e["type"] for e in events["events"]] == ["call_started", "call_settled"]
    assert {e["call_id"] for e in events["events"]} == {ended["call_id"]}
