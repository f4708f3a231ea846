"""The contract as a client's maker reads it, against `up`: the schema it serves passes
Schemathesis (every check, every phase, with the refusals schemathesis.toml names), its event
stream sends what the schema says, and clients generated from it (Python by
openapi-python-client, TypeScript by openapi-typescript and openapi-fetch) drive a whole call
on the first try, with no hand edits."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jsonschema
import pytest

from engine.webhooks import verify
from tests.test_security import Up
from tests.test_service import free_port
from tests.test_webhooks import Receiver

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("end_to_end")]

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ROOT / "tests" / "clients"
SCHEMATHESIS_EXAMPLES = 25  # per operation and phase: 13 s for all of them at 50 here
SCHEMATHESIS_SEED = 20261205
TOOL_TIMEOUT_S = 300  # npm ci on a cold cache, Schemathesis, a generator


@pytest.fixture(scope="module")
def engine():
    # Schemathesis sends wrong keys on purpose; the door would throttle the right one after.
    # A webhook receiver on this machine is a private address: allowed here.
    env = {"BILLING_HTTP_KEY_FAILURES_MAX": "1000000", "BILLING_WEBHOOK_PRIVATE_URLS": "1"}
    up = Up(free_port(), env)
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture(scope="module")
def spec(engine, tmp_path_factory) -> Path:
    """The schema as the running service serves it, on disk for the generators."""
    served = httpx.get(f"{engine.url}/openapi.json", timeout=10)
    assert served.status_code == 200
    path = tmp_path_factory.mktemp("contract") / "openapi.json"
    path.write_text(served.text)
    return path


def test_up_sends_a_call_to_a_webhook_signed(engine):
    receiver = Receiver(free_port())
    receiver.up()
    try:
        api = httpx.Client(base_url=engine.url, headers={"Authorization": f"Bearer {engine.key}"})
        body = {"url": receiver.url, "event_types": ["call_started", "call_settled"]}
        made = api.post("/v1/webhooks", json=body).json()
        user = api.post("/v1/users", json={"name": "w"}).json()["user_id"]
        listener = api.post("/v1/users", json={"name": "v", "role": "listener"}).json()["user_id"]
        api.post(f"/v1/wallets/{user}/top-ups", json={"amount": 50, "idempotency_key": "t"})
        call = api.post("/v1/calls", json={"user_id": user, "listener_id": listener}).json()
        api.post(f"/v1/calls/{call['call_id']}/end")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            mine = [
                (h, b) for h, b, _ in receiver.got if json.loads(b)["call_id"] == call["call_id"]
            ]
            if len(mine) == 2:
                break
            time.sleep(0.1)
        assert [json.loads(b)["type"] for _, b in mine] == ["call_started", "call_settled"]
        assert all(verify(made["secret"], b, h["billing-signature"]) for h, b in mine)
        r = api.get(f"/v1/webhooks/{made['webhook_id']}/deliveries")
        assert {d["status"] for d in r.json()["deliveries"]} == {"delivered"}
        api.delete(f"/v1/webhooks/{made['webhook_id']}")
    finally:
        receiver.down()


def run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, **kw)


def test_the_stream_sends_what_the_schema_says(engine, spec):
    doc = json.loads(spec.read_text())
    api = httpx.Client(base_url=engine.url, headers={"Authorization": f"Bearer {engine.key}"})
    user = api.post("/v1/users", json={"name": "s"}).json()["user_id"]
    listener = api.post("/v1/users", json={"name": "l", "role": "listener"}).json()["user_id"]
    api.post(f"/v1/wallets/{user}/top-ups", json={"amount": 50, "idempotency_key": "t"})
    call = api.post("/v1/calls", json={"user_id": user, "listener_id": listener}).json()
    api.post(f"/v1/calls/{call['call_id']}/end")

    op = doc["paths"]["/v1/events/stream"]["get"]
    message = op["responses"]["200"]["content"]["text/event-stream"]["schema"]
    event = doc["components"]["schemas"]["EventsPage"]["properties"]["events"]["items"]

    def valid(value, schema) -> None:  # against the whole document, so its $refs resolve
        jsonschema.Draft202012Validator({**doc, **schema}).validate(value)

    got: list[dict] = []
    with api.stream("GET", "/v1/events/stream", params={"user_id": user}, timeout=10) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        fields: dict = {}
        for line in r.iter_lines():
            if line.startswith(("id:", "event:", "data:")):
                name, _, value = line.partition(":")
                fields[name] = value.strip()
            elif not line and fields:
                got.append(fields)
                fields = {}
                if len(got) == 2:
                    break
    for fields in got:
        valid(fields, message)
        valid(json.loads(fields["data"]), event)
        assert json.loads(fields["data"])["type"] == fields["event"]
    assert [f["event"] for f in got] == ["call_started", "call_settled"]


def test_a_generated_python_client_drives_a_whole_call(engine, spec, tmp_path):
    maker = shutil.which("openapi-python-client", path=os.path.dirname(sys.executable))
    made = run([maker, "generate", "--path", str(spec), "--meta", "none",
                "--output-path", str(tmp_path / "client")])  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    assert "warning" not in (made.stdout + made.stderr).lower(), made.stdout + made.stderr
    done = run(
        [sys.executable, str(CLIENTS / "drive.py"), engine.url, engine.key],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "whole call: ok"


@pytest.mark.skipif(not shutil.which("npm"), reason="Node.js and npm are not installed")
def test_a_generated_typescript_client_drives_a_whole_call(engine, spec, tmp_path):
    for name in ("package.json", "package-lock.json", "tsconfig.json", "drive.ts"):
        shutil.copy(CLIENTS / "ts" / name, tmp_path / name)
    steps = [
        ["npm", "ci", "--no-audit", "--no-fund"],
        # Optional fields are optional (openapi-typescript would mark those with a default
        # as always present in answers; the engine leaves none out, but a client need not rely
        # on it).
        ["npx", "openapi-typescript", str(spec), "--default-non-nullable", "false",
         "-o", "schema.d.ts"],
        ["npx", "tsc", "-p", "."],  # the drive type-checks against the generated schema
        ["node", "dist/drive.js", engine.url, engine.key],
    ]  # fmt: skip
    for step in steps:
        done = run(step, cwd=tmp_path)
        assert done.returncode == 0, (step, done.stdout[-4000:], done.stderr[-4000:])
    assert done.stdout.strip() == "whole call: ok"


# Last of the module's: the offers it creates (free minutes for new users) would be taken by the
# calls of the tests above, which check every coin.
def test_schemathesis_finds_nothing(engine, spec):
    # The stream never ends, so Schemathesis would wait out each of its cases (2.4 s apiece);
    # test_the_stream_sends_what_the_schema_says reads it instead.
    st = shutil.which("st", path=os.path.dirname(sys.executable))
    done = run(
        [st, "run", f"{engine.url}/openapi.json", "--checks", "all",
         "-H", f"Authorization: Bearer {engine.key}",
         "--max-examples", str(SCHEMATHESIS_EXAMPLES), "--seed", str(SCHEMATHESIS_SEED),
         "--exclude-operation-id", "stream_events", "--no-color"],
        cwd=ROOT,  # where schemathesis.toml is
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "Configuration:    " + str(ROOT / "schemathesis.toml") in done.stdout
    operations = sum(len(methods) for methods in json.loads(spec.read_text())["paths"].values())
    assert f"Tested: {operations - 1}" in done.stdout, done.stdout[-3000:]  # all but the stream
