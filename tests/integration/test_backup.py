"""`m1lite backup` and `m1lite restore` as an operator runs them: real commands in their
own processes against real servers and data directories.

- A backup taken while clients write holds every event acknowledged (async=false)
  before it began, and a server started on the restored directory answers the counts
  the manifest reports and hands out keys after them.
- A stopped server's directory backs up too, and users, tokens, stores, the schema,
  system properties and session documents come back.
- restore refuses a non-empty directory (without --force), a directory a server holds,
  and an incomplete, damaged or inconsistent backup, each with a clear message and a
  non-zero exit, leaving the directory as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import StartServer

from integration.server import TOKEN_HEADER, Server

pytestmark = pytest.mark.slow

WRITERS = 3
ITEMS_PER_WRITE = 25
BEFORE_BACKUP = 3_000  # events acknowledged before the backup starts (at least)


def m1lite(*args: str | Path) -> subprocess.CompletedProcess[str]:
    # The test runner's own M1LITE_* settings must not reach the command.
    environ = {k: v for k, v in os.environ.items() if not k.startswith("M1LITE_")}
    return subprocess.run(
        [sys.executable, "-m", "m1lite", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
    )


def backup(data: Path, dest: Path) -> dict[str, Any]:
    done = m1lite("backup", "--data", data, dest, "--json")
    assert done.returncode == 0, done.stderr
    manifest: dict[str, Any] = json.loads(done.stdout)
    return manifest


def restore(src: Path, data: Path, *flags: str) -> dict[str, Any]:
    done = m1lite("restore", src, "--data", data, "--json", *flags)
    assert done.returncode == 0, done.stderr
    restored: dict[str, Any] = json.loads(done.stdout)
    return restored


def count(server: Server, q: str = "*", store: str = "index") -> int:
    response = server.post("/query", server.admin_token(), data={"store": store, "q": q})
    assert response.status_code == 200, response.text
    found: int = response.json()["response"]["numFound"]
    return found


def write(server: Server, items: list[dict[str, Any]], **params: str) -> list[int]:
    response = server.post(
        "/write",
        server.admin_token(),
        data={"items": json.dumps(items), "async": "false", **params},
    )
    assert response.status_code == 200, response.text
    keys: list[int] = response.json()
    return keys


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under root with a hash of its bytes: 'untouched' made checkable."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


class Writers:
    """Clients writing async=false in threads; remembers when each answer arrived."""

    def __init__(self, server: Server, count: int) -> None:
        self.server = server
        self.token = server.admin_token()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked: list[tuple[float, int, str, int]] = []  # (answer time, key, writer, seq)
        self.errors: list[str] = []
        self.threads = [
            threading.Thread(target=self._run, args=(f"w{n}",), daemon=True) for n in range(count)
        ]

    def __enter__(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def _run(self, name: str) -> None:
        seq = 0
        with httpx.Client(base_url=self.server.url, timeout=60) as client:
            while not self.stop.is_set():
                items = [
                    {"type": "view", "writer": name, "seq": seq + i, "url": {"path": f"/p{i % 7}"}}
                    for i in range(ITEMS_PER_WRITE)
                ]
                response = client.post(
                    "/write",
                    headers={TOKEN_HEADER: self.token},
                    data={"items": json.dumps(items), "async": "false"},
                )
                answered = time.monotonic()
                if response.status_code != 200:
                    self.errors.append(f"{response.status_code} {response.text}")
                    return
                with self.lock:
                    for i, key in enumerate(response.json()):
                        self.acked.append((answered, key, name, seq + i))
                seq += ITEMS_PER_WRITE

    def wait_for(self, events: int) -> None:
        deadline = time.monotonic() + 60
        while len(self.acked) < events:
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, f"only {len(self.acked)} events acknowledged"
            time.sleep(0.05)


def test_backup_while_clients_write_keeps_every_acknowledged_event(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server()
    dest = tmp_path / "backups" / "during-writes"
    with Writers(server, WRITERS) as writers:
        writers.wait_for(BEFORE_BACKUP)
        began = time.monotonic()
        manifest = backup(server.data_dir, dest)
        # Clients keep writing through the backup; give them a moment after it too.
        after = len(writers.acked)
        writers.wait_for(after + 200)
    assert not writers.errors, writers.errors
    contents = manifest["contents"]
    before = [entry for entry in writers.acked if entry[0] < began]
    assert len(before) >= BEFORE_BACKUP
    assert max(key for _, key, _, _ in before) <= contents["last_key"]
    assert contents["first_key"] == 0
    assert contents["events"] == contents["published"] == contents["last_key"] + 1
    assert contents["users"] == 1 and contents["data_stores"] == ["index"]
    assert manifest["files"]["lake/data.mdb"]["bytes"] == manifest["bytes"] > 0
    assert len(writers.acked) > contents["events"]  # writes went on past the snapshot

    restored_dir = tmp_path / "restored"
    restored = restore(dest, restored_dir)
    assert restored["events"] == contents["events"]
    assert restored["next_key"] == contents["last_key"] + 1
    assert restored["replaced"] is False

    copy = start_server(data_dir=restored_dir)
    # The checkpoint came along: the start replays only the events after its watermark.
    tail = contents["events"] - contents["index_watermark"]
    replay_lines = re.findall(r"indexed (\d+) events written after", copy.stderr())
    assert replay_lines == ([str(tail)] if tail else [])

    # The counts the manifest reports, overall and per client: exactly the acknowledged
    # events up to the snapshot's last key (keys are handed out in commit order).
    assert count(copy) == contents["published"]
    in_backup = [entry for entry in writers.acked if entry[1] <= contents["last_key"]]
    assert len(in_backup) == contents["events"]
    for n in range(WRITERS):
        name = f"w{n}"
        assert count(copy, f"writer:{name}") == sum(1 for e in in_backup if e[2] == name)

    # Every event acknowledged before the backup began reads back as it was written.
    keys = [key for _, key, _, _ in before]
    expected = {key: (name, seq) for _, key, name, seq in before}
    for start in range(0, len(keys), 1_000):
        chunk = keys[start : start + 1_000]
        response = copy.post("/get", copy.admin_token(), data={"ids": json.dumps(chunk)})
        assert response.status_code == 200, response.text
        records = response.json()
        assert [r["_m1key"] for r in records] == chunk
        assert all((r["writer"], r["seq"]) == expected[r["_m1key"]] for r in records)

    # New writes continue after the restored log's last key; none is reused.
    new_keys = write(copy, [{"type": "after-restore"}, {"type": "after-restore"}])
    assert new_keys == [contents["last_key"] + 1, contents["last_key"] + 2]
    assert count(copy) == contents["published"] + 2
    # The original server went on serving through the backup.
    assert count(server) == len(writers.acked)


TEMPLATE = {
    "environment": {
        "stores": [{"name": "index"}],
        # Long timeout: no session lapses while the test runs, so every document is
        # still there to compare after the restore.
        "sessionStores": [{"store": "stash", "timeoutSeconds": 3600}],
    }
}


def test_stopped_server_backup_keeps_users_tokens_stores_schema_and_sessions(
    start_server: StartServer, tmp_path: Path
) -> None:
    template = tmp_path / "template.json"
    template.write_text(json.dumps(TEMPLATE))
    server = start_server("--template", str(template))
    admin = server.admin_token()
    reader = server.add_user("reader", "reader-password-1", ["query", "get"])
    properties = json.dumps([{"name": "cart.size", "type": "integer", "description": "items"}])
    assert server.post("/schema/add", admin, data={"properties": properties}).status_code == 204
    cors = server.post("/system/cors/add", admin, data={"domains": "shop.example"})
    assert cors.status_code == 204, cors.text
    environment = {"stores": [{"name": "archive"}]}
    added = server.post(
        "/orchestrate/addStores", admin, data={"environment": json.dumps(environment)}
    )
    assert added.status_code == 200, added.text
    sessions = [
        {"session": {"id": f"s{n}"}, "page": f"/p{n % 3}", "cart": {"size": n}} for n in range(40)
    ]
    ops = json.dumps([{"upsert": sessions}, {"delete": ["s7"]}])
    answer = server.post(
        "/session/update", admin, data={"store": "stash", "ops": ops, "async": "false"}
    )
    assert answer.status_code == 204, answer.text
    write(server, [{"type": "view", "cart": {"size": n}} for n in range(30)])
    write(server, [{"type": "hidden"} for _ in range(5)], publish="false")

    def state(s: Server) -> dict[str, Any]:
        token = s.admin_token()
        items = s.post(
            "/session/query", token, data={"store": "stash", "q": "*", "rows": 100}
        ).json()
        return {
            "users": s.get("/user/list", token).json(),
            "schema": s.get("/schema", token).json(),
            "system": s.get("/system", token).json(),
            "stores": s.get("/store/list", token).json(),
            "session_stores": s.get("/session/list", token).json(),
            "sessions": sorted(items["items"], key=lambda doc: doc["session"]["id"]),
            "index": count(s),
            "archive": count(s, store="archive"),
            "sized": count(s, "cart.size:[10 TO *]"),
        }

    before = state(server)
    assert len(before["sessions"]) == 39 and before["index"] == 30
    server.stop()

    dest = tmp_path / "backup-of-stopped"
    manifest = backup(server.data_dir, dest)
    contents = manifest["contents"]
    assert (contents["events"], contents["published"]) == (35, 30)
    assert contents["session_stores"] == {"stash": 39}
    assert contents["data_stores"] == ["index", "archive"]
    assert contents["users"] == 2 and contents["tokens"] >= 2
    # Everything was checkpointed at shutdown: nothing to replay after a restore.
    assert contents["index_watermark"] == contents["events"]

    restored_dir = tmp_path / "restored"
    restore(dest, restored_dir)
    copy = start_server(data_dir=restored_dir)
    assert "written after the last checkpoint" not in copy.stderr()
    assert state(copy) == before
    # A token minted before the backup still works; the user's password too.
    assert copy.post("/query", reader, data={"store": "index", "q": "*"}).status_code == 200
    assert copy.login("reader", "reader-password-1")
    assert write(copy, [{"type": "view"}]) == [35]


def valid_backup(start_server: StartServer, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    server = start_server()
    write(server, [{"type": "view", "n": n} for n in range(50)])
    dest = tmp_path / "backup"
    manifest = backup(server.data_dir, dest)
    server.stop()
    return dest, manifest


def test_restore_refuses_a_non_empty_or_served_directory(
    start_server: StartServer, tmp_path: Path
) -> None:
    src, manifest = valid_backup(start_server, tmp_path)

    occupied = start_server()
    write(occupied, [{"type": "other"}])
    occupied.stop()
    untouched = tree_digest(occupied.data_dir)
    refused = m1lite("restore", src, "--data", occupied.data_dir)
    assert refused.returncode == 2
    assert "is not empty; --force replaces its environment" in refused.stderr
    assert tree_digest(occupied.data_dir) == untouched

    occupied.start()
    for flags in ((), ("--force",)):
        refused = m1lite("restore", src, "--data", occupied.data_dir, *flags)
        assert refused.returncode == 3, refused.stderr
        assert "is in use by m1lite pid" in refused.stderr
        assert "stop the server first" in refused.stderr
    assert count(occupied) == 1  # the server and its data carry on
    occupied.stop()

    # --force replaces the environment and keeps the directory's other files.
    (occupied.data_dir / "import" / "events.jsonl").write_text('{"type": "kept"}\n')
    done = restore(src, occupied.data_dir, "--force")
    assert done["replaced"] is True and done["events"] == manifest["contents"]["events"]
    assert (occupied.data_dir / "import" / "events.jsonl").exists()
    assert not [p for p in occupied.data_dir.iterdir() if ".restore-" in p.name]
    occupied.restart()  # restart(): the admin token it held is not in the restored data
    assert count(occupied) == 50 and count(occupied, "type:other") == 0


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no manifest", "not a complete backup: no manifest.json"),
        ("manifest not JSON", "manifest.json is unreadable"),
        ("not a backup", "is not a backup directory"),
        ("flipped byte", "the backup is damaged: lake/data.mdb has"),
        ("truncated", "the backup is damaged: lake/data.mdb has"),
        ("no data file", "the backup has no lake/data.mdb"),
        ("counts edited", "the backup does not match its manifest: events 50 (manifest: 51)"),
    ],
)
def test_restore_refuses_a_damaged_backup_and_leaves_the_directory_alone(
    start_server: StartServer, tmp_path: Path, damage: str, message: str
) -> None:
    src, manifest = valid_backup(start_server, tmp_path)
    data_file = src / "lake" / "data.mdb"
    if damage == "no manifest":
        (src / "manifest.json").unlink()
    elif damage == "manifest not JSON":
        (src / "manifest.json").write_text("{not json")
    elif damage == "not a backup":
        src = tmp_path / "nowhere"
    elif damage == "flipped byte":
        raw = bytearray(data_file.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data_file.write_bytes(bytes(raw))
    elif damage == "truncated":
        raw = data_file.read_bytes()
        data_file.write_bytes(raw[: len(raw) // 2])
    elif damage == "no data file":
        data_file.unlink()
    elif damage == "counts edited":
        manifest["contents"]["events"] += 1
        (src / "manifest.json").write_text(json.dumps(manifest))

    fresh = tmp_path / "fresh"
    refused = m1lite("restore", src, "--data", fresh)
    assert refused.returncode == 2, refused.stderr
    assert message in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not fresh.exists()
    assert not [p for p in tmp_path.iterdir() if ".restore-" in p.name]

    existing = start_server()
    write(existing, [{"type": "mine"}])
    existing.stop()
    untouched = tree_digest(existing.data_dir)
    refused = m1lite("restore", src, "--data", existing.data_dir, "--force")
    assert refused.returncode == 2 and message in refused.stderr
    assert tree_digest(existing.data_dir) == untouched


def test_backup_refuses_a_used_destination_and_a_directory_without_data(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server()
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    refused = m1lite("backup", "--data", server.data_dir, used)
    assert refused.returncode == 2
    assert "already exists and is not an empty directory" in refused.stderr
    assert [p.name for p in used.iterdir()] == ["notes.txt"]

    refused = m1lite("backup", "--data", tmp_path / "no-data", tmp_path / "b")
    assert refused.returncode == 2 and "holds no m1lite data" in refused.stderr
    assert not (tmp_path / "b").exists()

    # An existing empty directory (a mount point, say) is fine; the summary line says
    # what was copied.
    empty = tmp_path / "empty"
    empty.mkdir()
    done = m1lite("backup", "--data", server.data_dir, empty)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        rf"m1lite: backed up 0 events to {re.escape(str(empty))}: [\d.]+ KiB in [\d.]+ s\n",
        done.stdout,
    )
    assert sorted(p.name for p in empty.iterdir()) == ["lake", "manifest.json"]


def type_counts(server: Server, q: str) -> dict[str, Any]:
    facet = {"types": {"type": "terms", "field": "type", "limit": -1}}
    response = server.post(
        "/query",
        server.admin_token(),
        data={"store": "index", "q": q, "json": json.dumps({"facet": facet})},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return {"count": body["response"]["numFound"], "types": body["facets"]["types"]}


def live_sessions(server: Server) -> int:
    response = server.post(
        "/session/query", server.admin_token(), data={"store": "stash", "q": "*"}
    )
    assert response.status_code == 200, response.text
    found: int = response.json()["count"]
    return found


def test_backup_during_a_simulator_run_restores_to_the_same_counts(
    start_server: StartServer, tmp_path: Path
) -> None:
    template = tmp_path / "template.json"
    template.write_text(json.dumps(TEMPLATE))
    server = start_server("--template", str(template), "--trusted-proxies", "127.0.0.1")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("M1LITE_")}
    with open(tmp_path / "simulate.out", "wb") as out, open(tmp_path / "simulate.err", "wb") as err:
        simulator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "m1lite",
                "simulate",
                "--server",
                server.url,
                "--user",
                "admin",
                "--password",
                server.admin_password,
                "--session",
                "stash",
                "--users",
                "40",
                "--duration",
                "15",
            ],
            stdout=out,
            stderr=err,
            env=environ,
        )
    try:
        deadline = time.monotonic() + 60
        # Some events and some live sessions (heartbeats begin after 5 s) to copy.
        while count(server) < 100 or live_sessions(server) == 0:
            assert simulator.poll() is None, (tmp_path / "simulate.err").read_text()
            assert time.monotonic() < deadline, "the simulator's events never arrived"
            time.sleep(0.2)
        manifest = backup(server.data_dir, tmp_path / "backup")
        assert simulator.poll() is None  # the backup was taken during the run
        assert simulator.wait(120) == 0, (tmp_path / "simulate.err").read_text()
    finally:
        if simulator.poll() is None:
            simulator.kill()
            simulator.wait()
    contents = manifest["contents"]
    assert contents["events"] >= 100 and contents["session_stores"]["stash"] > 0

    restore(tmp_path / "backup", tmp_path / "restored")
    copy = start_server(data_dir=tmp_path / "restored")
    # The same counts as the original server gives for the events up to the snapshot
    # (it went on taking events after it), and as the manifest reports.
    restored = type_counts(copy, "*")
    assert restored == type_counts(server, f"_m1key:[0 TO {contents['last_key']}]")
    assert restored["count"] == contents["published"] == contents["events"]
    assert {b["val"] for b in restored["types"]["buckets"]} >= {"sessionStart", "view"}
    assert live_sessions(copy) == contents["session_stores"]["stash"]
