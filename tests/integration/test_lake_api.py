"""The lake and environment endpoints against a real server: /write, /get, /publish, /schema,
/store/*, /session/list, /orchestrate/addStores and /health."""

from __future__ import annotations

import gzip
import json
import re
from typing import Any

import httpx
import pytest

from integration.server import Server, assert_error

ISO_MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
PROGRESS_KEYS = {"file", "format", "rows", "errors", "done"}


def write(server: Server, items: list[Any], **params: str) -> httpx.Response:
    data = {"items": json.dumps(items), "async": "false", **params}
    return server.post("/write", server.admin_token(), data=data)


def keys_of(server: Server, items: list[Any], **params: str) -> list[int]:
    response = write(server, items, **params)
    assert response.status_code == 200, response.text
    return response.json()


def get(server: Server, ids: Any, **kwargs: Any) -> list[dict[str, Any]]:
    response = server.post("/get", server.admin_token(), data={"ids": ids}, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


# -- /write ----------------------------------------------------------------------------------


def test_write_sync_returns_keys_in_item_order_never_reused(server: Server) -> None:
    first = keys_of(server, [{"n": i} for i in range(3)])
    assert first == [0, 1, 2]
    assert [r["n"] for r in get(server, "0,1,2")] == [0, 1, 2]
    assert keys_of(server, [{"n": 3}, {"n": 4}]) == [3, 4]
    server.restart()
    assert keys_of(server, [{"n": 5}]) == [5]
    server.kill()  # a crash: no drain, no clean close
    server.start()
    after_crash = keys_of(server, [{"n": 6}, {"n": 7}])
    assert after_crash == [6, 7]
    assert [r["n"] for r in get(server, json.dumps(list(range(8))))] == list(range(8))


def test_write_async_is_204_and_lands(shared_server: Server) -> None:
    admin = shared_server.admin_token()
    response = shared_server.post("/write", admin, data={"items": '[{"kind":"async"}]'})
    assert (response.status_code, response.content) == (204, b"")
    # A later durable write commits after everything queued before it.
    [key] = keys_of(shared_server, [{"kind": "sync"}])
    assert [r["kind"] for r in get(shared_server, f"{key - 1},{key}")] == ["async", "sync"]


def test_unpublished_events_are_stored(shared_server: Server) -> None:
    keys = keys_of(shared_server, [{"hidden": True}], publish="false")
    record = get(shared_server, str(keys[0]))[0]
    assert record["hidden"] is True


def test_write_empty_items(shared_server: Server) -> None:
    assert write(shared_server, []).json() == []
    response = shared_server.post("/write", shared_server.admin_token(), data={"items": "[]"})
    assert response.status_code == 204


def test_client_sent_m1_values_are_overwritten(shared_server: Server) -> None:
    item = {
        "_m1key": 999,
        "_m1rand": 5,
        "_m1": {"ip": "6.6.6.6", "receivedUTC": "1999-01-01T00:00:00.000Z", "geo": {"x": 1}},
        "_m1.ip": "1.2.3.4",
        "_m1custom": "x",
        "keep": "me",
    }
    [key] = keys_of(shared_server, [item])
    record = get(shared_server, str(key))[0]
    assert record["_m1key"] == key != 999
    assert 0 <= record["_m1rand"] < 1
    assert record["_m1.ip"] == "127.0.0.1"
    assert record["_m1.receivedUTC"] != "1999-01-01T00:00:00.000Z"
    assert ISO_MS_Z.match(record["_m1.receivedUTC"])
    assert "_m1.geo.x" not in record and "_m1custom" not in record
    assert record["keep"] == "me"


# -- /get ------------------------------------------------------------------------------------


def test_get_ids_forms_order_and_unknown_keys(shared_server: Server) -> None:
    k = keys_of(shared_server, [{"n": i} for i in range(5)])
    assert k == list(range(k[0], k[0] + 5))

    def n_of(ids: str) -> list[int]:
        return [r["n"] for r in get(shared_server, ids)]

    assert n_of(f"{k[3]},{k[1]},{k[4]}") == [3, 1, 4]
    assert n_of(f" {k[2]} , {k[0]} ") == [2, 0]
    assert n_of(json.dumps([k[4], k[0], k[2]])) == [4, 0, 2]
    assert n_of(f"{k[1]},999999,{k[3]},-1") == [1, 3]
    assert get(shared_server, "999999") == []
    admin = shared_server.admin_token()
    by_query = shared_server.get("/get", admin, params={"ids": f"{k[4]},{k[3]}"}).json()
    assert [r["n"] for r in by_query] == [4, 3]
    by_json = shared_server.post("/get", admin, json={"ids": [k[2], k[1]]}).json()
    assert [r["n"] for r in by_json] == [2, 1]
    fields = set(get(shared_server, str(k[0]))[0])
    assert fields == {"n", "_m1key", "_m1rand", "_m1.ip", "_m1.receivedUTC"}


def test_get_bad_ids_is_400(shared_server: Server) -> None:
    admin = shared_server.admin_token()
    for ids in ("x", "1,two", "[1,", "[1.5]", '{"a":1}', "[null]"):
        assert_error(shared_server.post("/get", admin, data={"ids": ids}), 400)
    assert_error(shared_server.post("/get", admin), 400)


# -- /publish --------------------------------------------------------------------------------


def _publish(server: Server, **kwargs: Any) -> dict[str, Any]:
    response = server.post("/publish", server.admin_token(), **kwargs)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == PROGRESS_KEYS
    return body


def test_publish_upload_jsonl_gz(shared_server: Server) -> None:
    [before] = keys_of(shared_server, [{"marker": "before"}])
    lines = [{"row": i, "user": {"name": f"u{i}"}} for i in range(25)]
    payload = gzip.compress("\n".join(json.dumps(x) for x in lines).encode() + b"\n")
    files = {"file": ("us.jsonl.gz", payload, "application/gzip")}
    progress = _publish(shared_server, files=files)
    assert progress == {
        "file": "us.jsonl.gz",
        "format": "jsonl",
        "rows": 25,
        "errors": 0,
        "done": True,
    }
    records = get(shared_server, ",".join(str(before + 1 + i) for i in range(25)))
    assert [(r["row"], r["user.name"]) for r in records] == [(i, f"u{i}") for i in range(25)]
    assert all(r["_m1.ip"] == "127.0.0.1" and ISO_MS_Z.match(r["_m1.receivedUTC"]) for r in records)


def test_publish_upload_csv(shared_server: Server) -> None:
    [before] = keys_of(shared_server, [{"marker": "before"}])
    csv_text = 'name,city,visits\nann,Oslo,3\nbo,"Rio, BR",5\n'
    progress = _publish(
        shared_server, files={"file": ("people.csv", csv_text.encode(), "text/csv")}
    )
    assert progress["format"] == "csv" and progress["rows"] == 2 and progress["done"] is True
    records = get(shared_server, f"{before + 1},{before + 2}")
    assert [(r["name"], r["city"], r["visits"]) for r in records] == [
        ("ann", "Oslo", "3"),
        ("bo", "Rio, BR", "5"),
    ]


def test_publish_rows_limit(shared_server: Server) -> None:
    lines = "\n".join(json.dumps({"i": i}) for i in range(10))
    progress = _publish(
        shared_server, data={"rows": "4"}, files={"file": ("x.jsonl", lines.encode(), "text/plain")}
    )
    assert progress["rows"] == 4


def test_publish_a_file_in_the_import_folder(shared_server: Server) -> None:
    [before] = keys_of(shared_server, [{"marker": "before"}])
    folder = shared_server.data_dir / "import" / "batch"
    folder.mkdir(parents=True)
    (folder / "events.json").write_text(json.dumps([{"j": 1}, {"j": 2}, {"j": 3}]))
    progress = _publish(shared_server, data={"file": "batch/events.json"})
    assert progress == {
        "file": "batch/events.json",
        "format": "json",
        "rows": 3,
        "errors": 0,
        "done": True,
    }
    assert [r["j"] for r in get(shared_server, f"[{before + 1},{before + 2},{before + 3}]")] == [
        1,
        2,
        3,
    ]


def test_publish_refuses_paths_outside_import_and_buckets(shared_server: Server) -> None:
    admin = shared_server.admin_token()
    (shared_server.data_dir / "secret.json").write_text('[{"leaked": true}]')
    for name in (
        "../secret.json",
        "../../etc/passwd.json",
        "batch/../../secret.json",
        str(shared_server.data_dir / "secret.json"),
        "/etc/hosts.json",
        "s3://m1-public/reddit/us.jsonl.gz",
        "gs://bucket/x.json",
    ):
        assert_error(shared_server.post("/publish", admin, data={"file": name}), 400)
    assert_error(shared_server.post("/publish", admin, data={"file": "missing.json"}), 404)
    assert_error(shared_server.post("/publish", admin), 400)


# -- /schema ---------------------------------------------------------------------------------


def test_schema_typed_property_strict_and_permissive(server: Server) -> None:
    admin = server.admin_token()
    names = [p["name"] for p in server.get("/schema", admin).json()]
    assert {"_m1key", "_m1rand"} <= set(names)
    properties = json.dumps([{"name": "cart.size", "type": "integer", "description": "items"}])
    assert server.post("/schema/add", admin, data={"properties": properties}).status_code == 204
    declared = {p["name"]: p for p in server.get("/schema", admin).json()}
    assert declared["cart.size"]["type"] == "integer"

    assert (
        server.post("/system/publish-permissive", admin, data={"value": "false"}).status_code == 204
    )
    [ok] = keys_of(server, [{"cart": {"size": "7"}}])
    assert get(server, str(ok))[0]["cart.size"] == 7  # coerced to the declared type
    body = assert_error(write(server, [{"cart": {"size": "seven"}, "other": 1}]), 400)
    assert "cart.size" in body["message"]

    assert (
        server.post("/system/publish-permissive", admin, data={"value": "true"}).status_code == 204
    )
    [kept] = keys_of(server, [{"cart": {"size": "seven"}, "other": 1}])
    record = get(server, str(kept))[0]
    assert "cart.size" not in record  # the bad value is dropped...
    assert record["other"] == 1  # ...the event is kept


def test_schema_wipe_keeps_the_builtins(server: Server) -> None:
    admin = server.admin_token()
    properties = json.dumps([{"name": "tags", "type": "string", "multi": True}])
    assert server.post("/schema/add", admin, data={"properties": properties}).status_code == 204
    assert "tags" in {p["name"] for p in server.get("/schema", admin).json()}
    assert server.post("/schema/wipe", admin).status_code == 204
    after = {p["name"]: p for p in server.get("/schema", admin).json()}
    assert "tags" not in after
    assert after["_m1key"]["type"] == "integer" and after["_m1key"]["required"] is True
    assert after["_m1rand"]["type"] == "double" and after["_m1rand"]["required"] is True
    server.restart()
    assert "tags" not in {p["name"] for p in server.get("/schema", server.admin_token()).json()}


# -- stores ----------------------------------------------------------------------------------


def _stores(server: Server) -> dict[str, dict[str, Any]]:
    listed = server.get("/store/list", server.admin_token()).json()
    return {s["name"]: s for s in listed}


def test_store_list_enable_autocommit(server: Server) -> None:
    admin = server.admin_token()
    listed = server.get("/store/list", admin).json()
    assert listed == [
        {
            "name": "index",
            "type": "standard",
            "active": True,
            "autocommit": 1,
            "shards": 1,
            "replicas": 1,
        }
    ]
    assert (
        server.post("/store/enable", admin, data={"store": "index", "active": "false"}).status_code
        == 204
    )
    assert _stores(server)["index"]["active"] is False
    assert (
        server.post("/store/enable", admin, data={"store": "index", "active": "true"}).status_code
        == 204
    )
    assert _stores(server)["index"]["active"] is True
    assert (
        server.post("/store/autocommit", admin, data={"store": "index", "on": "false"}).status_code
        == 204
    )
    assert _stores(server)["index"]["autocommit"] == 0
    server.restart()
    assert _stores(server)["index"]["autocommit"] == 0
    assert (
        server.post(
            "/store/autocommit", server.admin_token(), data={"store": "index", "on": "true"}
        ).status_code
        == 204
    )
    assert _stores(server)["index"]["autocommit"] > 0
    assert_error(server.post("/store/enable", server.admin_token(), data={"store": "nope"}), 404)


def test_session_list_and_add_stores(server: Server) -> None:
    admin = server.admin_token()
    assert server.get("/session/list", admin).json() == []
    environment = {"stores": [], "sessionStores": [{"store": "stash", "shards": 1, "replicas": 1}]}
    response = server.post(
        "/orchestrate/addStores", admin, data={"environment": json.dumps(environment)}
    )
    assert response.status_code == 200, response.text
    sessions = server.get("/session/list", admin).json()
    assert [s["name"] for s in sessions] == ["stash"]
    assert sessions[0]["key"] == "session.id"
    assert (sessions[0]["shards"], sessions[0]["replicas"]) == (1, 1)
    again = server.post(
        "/orchestrate/addStores", admin, data={"environment": json.dumps(environment)}
    )
    assert_error(again, 409)
    server.restart()
    assert [s["name"] for s in server.get("/session/list", server.admin_token()).json()] == [
        "stash"
    ]
    assert list(_stores(server)) == ["index"]


@pytest.mark.parametrize(
    "environment",
    ['{"stores": "x"}', "[1]", "not json", '{"sessionStores": [{"store": "bad name!"}]}'],
)
def test_add_stores_bad_input_is_400(shared_server: Server, environment: str) -> None:
    response = shared_server.post(
        "/orchestrate/addStores", shared_server.admin_token(), data={"environment": environment}
    )
    assert_error(response, 400)


# -- /health ---------------------------------------------------------------------------------


def test_health_shape(shared_server: Server) -> None:
    keys_of(shared_server, [{"a": 1}])
    health = shared_server.get("/health", shared_server.admin_token()).json()
    assert "overall" in health
    for name, component in health.items():
        assert component["status"] in ("PASSED", "FAILED"), name
        assert isinstance(component.get("message", ""), str), name
    assert health["overall"]["status"] == "PASSED"
    assert {"lake", "db", "stores", "users"} <= set(health)
