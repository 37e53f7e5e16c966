"""Bad input against a real server: always the one JSON error shape, 400/404/405/413, never a
500, and the server keeps working afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from integration.server import Server, assert_error

MAX_PROPERTIES = 20
MAX_ITEMS = 50
MIB = 1024 * 1024
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
TEXT = "text/plain;charset=UTF-8"


@pytest.fixture(scope="module")
def srv(start_module_server) -> Server:
    return start_module_server(
        "--max-properties-per-event",
        str(MAX_PROPERTIES),
        "--max-items-per-write",
        str(MAX_ITEMS),
    )


def post_raw(srv: Server, body: bytes, content_type: str = FORM, path: str = "/write"):
    return srv.post(path, srv.admin_token(), content=body, headers={"content-type": content_type})


def write(srv: Server, items: object, **params: str) -> httpx.Response:
    data = {"items": json.dumps(items), "async": "false", **params}
    return srv.post("/write", srv.admin_token(), data=data)


def nested(depth: int) -> dict:
    """An object `depth` levels deep: nested(1) == {"a": 1}."""
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    assert isinstance(value, dict)
    return value


# -- items ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "items",
    ['[{"a":1', '[{"a":}]', "[{'a':1}]", '[{"a":1},]', "", "nope", '[{"a":NaN}]'],
)
def test_malformed_items_json_is_400(srv: Server, items: str) -> None:
    response = srv.post("/write", srv.admin_token(), data={"items": items})
    assert_error(response, 400)


@pytest.mark.parametrize("items", ['{"a":1}', "5", '"text"', "null", "true"])
def test_items_not_an_array_is_400(srv: Server, items: str) -> None:
    assert_error(srv.post("/write", srv.admin_token(), data={"items": items}), 400)


@pytest.mark.parametrize("item", [1, "x", None, [], [{"a": 1}], True])
def test_item_not_an_object_is_400(srv: Server, item: object) -> None:
    body = assert_error(write(srv, [{"ok": 1}, item]), 400)
    assert "items[1]" in body["message"]


def test_a_bad_item_stores_nothing_of_its_request(srv: Server) -> None:
    before = write(srv, [{"probe": "before"}]).json()[0]
    assert_error(write(srv, [{"probe": "x"}, 7]), 400)
    after = write(srv, [{"probe": "after"}]).json()[0]
    assert after == before + 1


@pytest.mark.parametrize(
    ("name", "value"), [("async", "maybe"), ("async", "2"), ("publish", "yes please")]
)
def test_wrong_boolean_param_is_400(srv: Server, name: str, value: str) -> None:
    response = srv.post("/write", srv.admin_token(), data={"items": '[{"a":1}]', name: value})
    assert_error(response, 400)


@pytest.mark.parametrize(
    "body",
    [
        {"items": [{"a": 1}], "async": 5},
        {"items": [{"a": 1}], "publish": []},
        {"items": [{"a": 1}], "async": {"x": 1}},
        {"items": "[not json"},
        {"items": {"a": 1}},
    ],
)
def test_wrong_types_in_a_json_body_are_400(srv: Server, body: dict) -> None:
    assert_error(srv.post("/write", srv.admin_token(), json=body), 400)


def test_wrong_integer_params_are_400(srv: Server) -> None:
    admin = srv.admin_token()
    upload = {"file": ("rows.jsonl", b'{"a":1}\n', "application/octet-stream")}
    for rows in ("abc", "1.5", "true"):
        assert_error(srv.post("/publish", admin, data={"rows": rows}, files=upload), 400)
    for ttl in ("abc", "0", "-5"):
        data = {"username": "admin", "password": "integration-admin-pw", "ttl": ttl}
        assert_error(srv.post("/auth", data=data), 400)
    for ids in ("abc", "1,x", "[1.5]", '["a"]', "[true]", "{}"):
        assert_error(srv.post("/get", admin, data={"ids": ids}), 400)


def test_empty_body_is_400(srv: Server) -> None:
    for content_type in (FORM, JSON, TEXT):
        body = assert_error(post_raw(srv, b"", content_type), 400)
        assert "items" in body["message"]


def test_invalid_utf8_body_is_400(srv: Server) -> None:
    for content_type in (FORM, JSON, TEXT, ""):
        assert_error(post_raw(srv, b'items=[{"a":"\xff\xfe"}]', content_type), 400)
        assert_error(post_raw(srv, b'{"items":[{"a":"\xc3\x28"}]}', content_type), 400)
    assert_error(post_raw(srv, b"items=%FF%FE"), 400)


@pytest.mark.parametrize("body", [b"[1,2]", b'"items"', b"null", b"42", b"[]"])
def test_json_body_that_is_not_an_object_is_400(srv: Server, body: bytes) -> None:
    assert_error(post_raw(srv, body, JSON), 400)


# -- depth, size, counts ---------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_absurd_nesting_is_400_never_500(srv: Server, depth: int) -> None:
    objects = b"[" + b'{"a":' * depth + b"1" + b"}" * depth + b"]"
    arrays = b"[" * depth + b"]" * depth
    for body, content_type in (
        (b"items=" + objects, FORM),
        (b"items=" + arrays, FORM),
        (b'{"items":' + objects + b"}", JSON),
        (b'{"items":' + objects + b"}", TEXT),
    ):
        assert_error(post_raw(srv, body, content_type), 400)


def test_depth_32_is_accepted_and_33_refused(srv: Server) -> None:
    response = write(srv, [nested(32)])
    assert response.status_code == 200
    record = srv.post("/get", srv.admin_token(), data={"ids": str(response.json()[0])}).json()
    assert record[0][".".join(["a"] * 32)] == 1
    body = assert_error(write(srv, [nested(33)]), 400)
    assert "32" in body["message"]
    # Arrays count as levels too: the object is one level, each array one more.
    assert write(srv, [{"b": json.loads("[" * 31 + "1" + "]" * 31)}]).status_code == 200
    assert_error(write(srv, [{"b": json.loads("[" * 32 + "1" + "]" * 32)}]), 400)


def test_too_many_properties(srv: Server) -> None:
    exact = {f"p{i}": i for i in range(MAX_PROPERTIES)}
    assert write(srv, [exact]).status_code == 200
    over = {f"p{i}": i for i in range(MAX_PROPERTIES + 1)}
    body = assert_error(write(srv, [{"ok": 1}, over]), 413)
    assert str(MAX_PROPERTIES) in body["message"]
    # Nested properties count once flattened.
    assert_error(write(srv, [{"n": {f"p{i}": i for i in range(MAX_PROPERTIES + 1)}}]), 413)


def test_too_many_items_is_413(srv: Server) -> None:
    assert write(srv, [{"i": i} for i in range(MAX_ITEMS)]).status_code == 200
    body = assert_error(write(srv, [{"i": i} for i in range(MAX_ITEMS + 1)]), 413)
    assert str(MAX_ITEMS) in body["message"]


def _chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize("size", [MIB + 1, 3 * MIB])
def test_body_over_1_mib_is_413(srv: Server, size: int) -> None:
    body = b"items=" + b"x" * (size - len(b"items="))
    assert len(body) == size
    honest = post_raw(srv, body)
    assert_error(honest, 413)
    chunked = srv.post(
        "/write", srv.admin_token(), content=_chunks(body), headers={"content-type": FORM}
    )
    assert "content-length" not in chunked.request.headers
    assert chunked.request.headers["transfer-encoding"] == "chunked"
    assert_error(chunked, 413)


def test_early_refusals_close_the_connection_and_say_so(srv: Server) -> None:
    """A reply sent before the body was read leaves the body on the socket; the server must
    announce `Connection: close` or a keep-alive client's next request fails."""
    admin = srv.admin_token()
    big = b"items=" + b"x" * (2 * MIB)
    medium = b"items=" + b"x" * (512 * 1024)
    cases = [
        ("/write", big, {}, 413),
        ("/write", "chunked", {}, 413),
        ("/no/such/endpoint", medium, {}, 404),
        ("/ping", medium, {}, 405),
        ("/write", medium, {"origin": "https://not-listed.example"}, 403),
    ]
    for _ in range(3):
        for path, body, headers, status in cases:
            content = _chunks(big) if body == "chunked" else body
            response = srv.post(
                path, admin, content=content, headers={"content-type": FORM, **headers}
            )
            assert_error(response, status)
            assert response.headers.get("connection") == "close", path
            # The same client (connection pool) carries on without a transport error.
            assert srv.get("/ping").status_code == 200


def test_body_of_exactly_1_mib_is_not_refused_for_size(srv: Server) -> None:
    padding = "x" * (MIB - len('items=[{"a":""}]'))
    body = f'items=[{{"a":"{padding}"}}]'.encode()
    assert len(body) == MIB
    assert post_raw(srv, body).status_code == 204


# -- routing ---------------------------------------------------------------------------------


def test_unknown_endpoint_is_404(srv: Server) -> None:
    for method in ("GET", "POST"):
        body = assert_error(srv.request(method, "/no/such/endpoint", srv.admin_token()), 404)
        assert "/no/such/endpoint" in body["message"]
    assert_error(srv.get("/no/such/endpoint"), 404)


def test_wrong_method_is_405(srv: Server) -> None:
    admin = srv.admin_token()
    assert_error(srv.get("/write", admin), 405)
    assert_error(srv.request("DELETE", "/user/list", admin), 405)
    assert_error(srv.post("/ping"), 405)
    assert_error(srv.request("PUT", "/auth"), 405)


# -- the corpus --------------------------------------------------------------------------------

CORPUS: list[tuple[str, bytes]] = [
    (FORM, b""),
    (FORM, b"a=1"),
    (FORM, b"items="),
    (FORM, b"items=["),
    (FORM, b"items=]"),
    (FORM, b"items={"),
    (FORM, b"items=[{]"),
    (FORM, b'items=[{"a":}]'),
    (FORM, b'items=[{"a":1,}]'),
    (FORM, b"items=[{'a':1}]"),
    (FORM, b"items=[1]"),
    (FORM, b'items=["x"]'),
    (FORM, b"items=[null]"),
    (FORM, b"items=[[]]"),
    (FORM, b"items=[true]"),
    (FORM, b"items=null"),
    (FORM, b"items=5"),
    (FORM, b'items="str"'),
    (FORM, b'items={"a":1}'),
    (FORM, b'items=[{"a":1}]&async=maybe'),
    (FORM, b'items=[{"a":1}]&publish=2'),
    (FORM, b'items=[{"a":NaN}]'),
    (FORM, b'items=[{"a":Infinity}]'),
    (FORM, b'items=[{"a":1e400}]'),
    (FORM, b'items=[{"a":123456789012345678901234567890}]'),
    (FORM, b'items=[{"a":[1,-99999999999999999999999]}]'),
    (FORM, b'items=[{"a":' + b"9" * 5000 + b"}]"),
    (FORM, b'items=[{"a":"\\ud800"}]'),
    (FORM, b'items=[{"a":"\\x"}]'),
    (FORM, b'items=[{"a":1}]x'),
    (FORM, b'items=[{"a":1}]&items=notjson'),
    (FORM, b"items=%FF"),
    (FORM, b"items=%ZZ"),
    (FORM, b"\xff\xfe\xfd"),
    (FORM, b"items=" + b"[" * 50 + b"]" * 50),
    (FORM, b"items=[" + json.dumps(nested(33)).encode() + b"]"),
    (FORM, b"items=" + json.dumps([{"i": i} for i in range(MAX_ITEMS + 1)]).encode()),
    (FORM, b"items=" + json.dumps([{f"p{i}": 1 for i in range(MAX_PROPERTIES + 1)}]).encode()),
    (JSON, b"{"),
    (JSON, b"[]"),
    (JSON, b'"x"'),
    (JSON, b"null"),
    (JSON, b"\xff\xfe"),
    (JSON, b'{"items":"not json"}'),
    (JSON, b'{"items":{"a":1}}'),
    (JSON, b'{"items":[1]}'),
    (JSON, b'{"items":[{"a":1}],"async":5}'),
    (JSON, b'{"items":[{"a":1}],"publish":[]}'),
    (JSON, b'{"items":[{"a":1}]}}'),
    (JSON, b'{"items":[{"a":"\xc3\x28"}]}'),
    (JSON, b'{"items":[{"a\xff":1}]}'),
    (TEXT, b'{"items":[{"a":"\xed\xa0\x80"}]}'),
    (TEXT, b'{"items":'),
    (TEXT, b'{"items":[1]}'),
    (TEXT, b"items=[{"),
    ("multipart/form-data", b"x"),
    ("multipart/form-data; boundary=zz", b"--zz\r\nbad"),
    ("multipart/form-data; boundary=zz", b'--zz\r\nContent-Disposition: form-data; name="items"'),
    (
        "multipart/form-data; boundary=zz",
        b'--zz\r\nContent-Disposition: form-data; name="items"\r\n\r\n[{"a":\r\n--zz--\r\n',
    ),
]


def test_corpus_of_malformed_bodies_never_500(srv: Server) -> None:
    assert len(CORPUS) >= 30
    for content_type, body in CORPUS:
        response = post_raw(srv, body, content_type)
        assert response.status_code in (400, 413), (content_type, body[:80], response.text)
        assert_error(response, response.status_code)


def test_compressed_request_bodies_are_refused(srv: Server) -> None:
    response = srv.post(
        "/write",
        srv.admin_token(),
        content=b"\x1f\x8b\x08\x00",
        headers={"content-type": FORM, "content-encoding": "gzip"},
    )
    assert_error(response, 400)


def test_out_of_range_integers_never_cost_acknowledged_events(srv: Server) -> None:
    """A value the log cannot hold must be refused up front, not fail a group commit that
    also carries other clients' acknowledged events."""
    admin = srv.admin_token()
    marker = "ack-before-bad-int"
    accepted = srv.post("/write", admin, data={"items": json.dumps([{"m": marker}] * 5)})
    assert accepted.status_code == 204
    assert_error(write(srv, [{"big": 2**64}]), 400)
    assert_error(write(srv, [{"big": -(2**63) - 1}]), 400)
    last = write(srv, [{"m": "after"}]).json()[0]
    # async events queued before it are committed no later than this durable write.
    records = srv.post(
        "/get", admin, data={"ids": ",".join(str(k) for k in range(last - 6, last))}
    ).json()
    assert [r.get("m") for r in records].count(marker) == 5
    edge = write(srv, [{"lo": -(2**63), "hi": 2**63 - 1}])
    assert edge.status_code == 200
    record = srv.post("/get", admin, data={"ids": str(edge.json()[0])}).json()[0]
    assert (record["lo"], record["hi"]) == (-(2**63), 2**63 - 1)


def test_server_still_healthy_after_all_that(srv: Server) -> None:
    assert srv.get("/ping").json() is True
    response = write(srv, [{"event": {"type": "stillAlive"}}])
    assert response.status_code == 200
    key = response.json()[0]
    records = srv.post("/get", srv.admin_token(), data={"ids": str(key)}).json()
    assert records[0]["event.type"] == "stillAlive"
    assert "Traceback" not in srv.stderr()
