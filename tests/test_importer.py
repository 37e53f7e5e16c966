import gzip
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import msgspec
import pytest

from m1lite.errors import BadRequest, PayloadTooLarge
from m1lite.importer import ImportProgress, guess_format, iter_items

EVENTS: list[dict[str, Any]] = [
    {"type": "view", "event": {"type": "view", "n": 1}, "tags": ["a", "b"]},
    {"type": "click", "event": {"type": "click", "n": 2}, "price": 9.5, "ok": True},
    {"type": "é-ünïcode", "event": {"type": "view", "n": 3}},
]


def read_all(path: Path, **options: Any) -> list[dict[str, Any]]:
    if "fmt" not in options:
        options["fmt"], options["compression"] = guess_format(path.name)
    with path.open("rb") as stream:
        return list(iter_items(stream, **options))


def jsonl_bytes(events: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


# ----------------------------------------------------------------- guess_format


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("us.jsonl.gz", ("jsonl", "gz")),
        ("s3://m1-public/reddit/us.jsonl.gz", ("jsonl", "gz")),
        ("x.csv", ("csv", None)),
        ("a.json.zip", ("json", "zip")),
        ("b.txt", ("txt", None)),
        ("DATA.TSV", ("txt", None)),
        ("events.ndjson", ("jsonl", None)),
        ("/tmp/dir.v2/x.CSV.GZ", ("csv", "gz")),
    ],
)
def test_guess_format(name: str, expected: tuple[str, str | None]) -> None:
    assert guess_format(name) == expected


@pytest.mark.parametrize("name", ["data", "data.gz", "archive.zip", "x.parquet", "json"])
def test_guess_format_refuses_unknown_names(name: str) -> None:
    with pytest.raises(BadRequest, match="pass format"):
        guess_format(name)


# ----------------------------------------------------------------- formats and compression


def test_jsonl_plain_gz_and_zip_read_back_the_same_events(tmp_path: Path) -> None:
    data = jsonl_bytes(EVENTS)
    (tmp_path / "e.jsonl").write_bytes(data)
    (tmp_path / "e.jsonl.gz").write_bytes(gzip.compress(data))
    with zipfile.ZipFile(tmp_path / "e.jsonl.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("inner/e.jsonl", data)
    for name in ("e.jsonl", "e.jsonl.gz", "e.jsonl.zip"):
        assert read_all(tmp_path / name) == EVENTS, name


def test_jsonl_skips_blank_lines_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n\r\n   \n{"a": 2}')
    assert read_all(path) == [{"a": 1}, {"a": 2}]


def test_json_array_and_single_object(tmp_path: Path) -> None:
    (tmp_path / "many.json").write_text(json.dumps(EVENTS, indent=2), encoding="utf-8")
    (tmp_path / "one.json.gz").write_bytes(gzip.compress(json.dumps(EVENTS[0]).encode()))
    assert read_all(tmp_path / "many.json") == EVENTS
    assert read_all(tmp_path / "one.json.gz") == [EVENTS[0]]


def test_json_larger_than_the_cap_is_413(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text(json.dumps(EVENTS), encoding="utf-8")
    size = path.stat().st_size
    assert len(read_all(path, fmt="json", compression=None, max_json_bytes=size)) == 3
    with pytest.raises(PayloadTooLarge, match="use the jsonl format"):
        read_all(path, fmt="json", compression=None, max_json_bytes=size - 1)


def test_csv_header_names_keys_and_cells_stay_strings(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text(
        "event.type,n,price,note\n"
        'view,1,9.5,"hello, world"\n'
        'click,,true,"two\nlines"\n'
        "\n"
        ",,,\n"
        "view,3\n",
        encoding="utf-8",
    )
    assert read_all(path) == [
        {"event.type": "view", "n": "1", "price": "9.5", "note": "hello, world"},
        {"event.type": "click", "price": "true", "note": "two\nlines"},
        {"event.type": "view", "n": "3"},
    ]


def test_txt_is_tab_delimited_and_delimiter_can_be_chosen(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("a\tb\n1\t2\n", encoding="utf-8")
    (tmp_path / "s.csv").write_text("a;b\n1;2\n", encoding="utf-8")
    assert read_all(tmp_path / "t.txt") == [{"a": "1", "b": "2"}]
    assert read_all(tmp_path / "s.csv", fmt="csv", compression=None, delimiter=";") == [
        {"a": "1", "b": "2"}
    ]
    assert read_all(tmp_path / "t.txt", fmt="csv", compression=None, delimiter="\\t") == [
        {"a": "1", "b": "2"}
    ]


def test_csv_gz_with_bom_and_trailing_delimiters(tmp_path: Path) -> None:
    path = tmp_path / "x.csv.gz"
    path.write_bytes(gzip.compress("\ufeffid,name,\n1,ann,\n2,bob,\n".encode()))
    assert read_all(path) == [{"id": "1", "name": "ann"}, {"id": "2", "name": "bob"}]


def test_other_encodings(tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_bytes("name\nJosé\n".encode("latin-1"))
    (tmp_path / "u.jsonl").write_bytes('{"name": "José"}\n'.encode("utf-16"))
    (tmp_path / "c.json").write_bytes('[{"name": "José"}]'.encode("cp1252"))
    assert read_all(tmp_path / "l.csv", fmt="csv", compression=None, encoding="ISO-8859-1") == [
        {"name": "José"}
    ]
    assert read_all(tmp_path / "u.jsonl", fmt="jsonl", compression=None, encoding="UTF-16") == [
        {"name": "José"}
    ]
    assert read_all(tmp_path / "c.json", fmt="json", compression=None, encoding="windows-1252") == [
        {"name": "José"}
    ]


def test_max_rows_stops_early(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(jsonl_bytes(EVENTS) + b"not json\n")
    assert read_all(path, fmt="jsonl", compression=None, max_rows=2) == EVENTS[:2]
    assert read_all(path, fmt="jsonl", compression=None, max_rows=0) == []
    with pytest.raises(BadRequest, match="line 4"):
        read_all(path, fmt="jsonl", compression=None, max_rows=-1)


def test_zip_from_a_non_seekable_stream(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("e.jsonl", jsonl_bytes(EVENTS))

    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            chunk = self._inner.read(len(b))
            b[: len(chunk)] = chunk
            return len(chunk)

    with Pipe(buffer.getvalue()) as pipe:
        assert list(iter_items(pipe, fmt="jsonl", compression="zip")) == EVENTS  # type: ignore[arg-type]


def test_callers_stream_is_left_open(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a\n1\n", encoding="utf-8")
    with path.open("rb") as stream:
        assert list(iter_items(stream, fmt="csv", compression=None)) == [{"a": "1"}]
        assert not stream.closed


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"a": 1}\n\n{"a": \n', r"line 3: invalid JSON"),
        (b'{"a": 1}\n[1, 2]\n', r"line 2: expected a JSON object, got an array"),
        (b'{"a": 1}\n"text"\n', r"line 2: expected a JSON object, got a string"),
        (b'{"a": 1}\n{"a": "\xff"}\n', r"line 2: not valid UTF-8"),
        (b"{}\n" + b"[" * 100_000 + b"]" * 100_000 + b"\n", r"line 2: JSON nesting too deep"),
    ],
)
def test_bad_jsonl_lines_are_named(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(BadRequest, match=message):
        read_all(path)


def test_bad_json_file_names_the_line_or_item(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(b'[\n{"a": 1},\n{"a": }\n]')
    with pytest.raises(BadRequest, match=r"line 3: invalid JSON"):
        read_all(path)
    path.write_bytes(b'[{"a": 1}, 2]')
    with pytest.raises(BadRequest, match=r"item 2 of the array is a number, not an object"):
        read_all(path)
    path.write_bytes(b'"just a string"')
    with pytest.raises(BadRequest, match=r"an object or an array of objects"):
        read_all(path)


def test_bad_csv_rows_are_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n1,2,3\n", encoding="utf-8")
    with pytest.raises(BadRequest, match=r"line 3: 3 fields but the header names 2"):
        read_all(path)
    path.write_text('a,b\n1,2\n"x"y,2\n', encoding="utf-8")
    with pytest.raises(BadRequest, match=r"line 3: "):
        read_all(path)
    path.write_text("a,,b\n1,,2\n1,x,2\n", encoding="utf-8")
    with pytest.raises(BadRequest, match=r"line 3: a value in a column with no name"):
        read_all(path)
    path.write_text("a,b,a\n1,2,3\n", encoding="utf-8")
    with pytest.raises(BadRequest, match=r"line 1: column 'a' appears twice"):
        read_all(path)
    path.write_bytes(b"a\nok\n\xff\n")
    with pytest.raises(BadRequest, match=r"line 3: not valid utf-8"):
        read_all(path)


def test_headers_false_is_refused_for_delimited_files(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("1,2\n", encoding="utf-8")
    with pytest.raises(BadRequest, match="TransformRuleSet"):
        read_all(path, fmt="csv", compression=None, headers=False)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fmt": "xml", "compression": None}, "format must be one of json, jsonl, csv, txt"),
        ({"fmt": "csv", "compression": "bz2"}, "compression must be gz or zip"),
        (
            {"fmt": "csv", "compression": None, "encoding": "klingon"},
            "unknown or unsupported encoding",
        ),
        (
            {"fmt": "csv", "compression": None, "encoding": "base64"},
            "unknown or unsupported encoding",
        ),
        ({"fmt": "csv", "compression": None, "delimiter": ";;"}, "delimiter must be one"),
    ],
)
def test_bad_options_fail_on_call(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a\n1\n", encoding="utf-8")
    with path.open("rb") as stream, pytest.raises(BadRequest, match=message):
        iter_items(stream, **options)


def test_zip_with_several_files_or_none(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.jsonl", b"{}\n")
        archive.writestr("b.jsonl", b"{}\n")
        archive.writestr("__MACOSX/._a.jsonl", b"junk")
    with pytest.raises(BadRequest, match=r"holds 2 files \(a.jsonl, b.jsonl\)"):
        read_all(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("folder/", b"")
    with pytest.raises(BadRequest, match="holds no file"):
        read_all(path)
    path.write_bytes(b"not a zip at all")
    with pytest.raises(BadRequest, match="not a readable zip archive"):
        read_all(path)


def test_damaged_gzip_is_a_bad_request(tmp_path: Path) -> None:
    data = gzip.compress(jsonl_bytes(EVENTS * 50))
    path = tmp_path / "x.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadRequest, match="damaged or truncated"):
        read_all(path)
    path.write_bytes(b"plain text, not gzip\n")
    with pytest.raises(BadRequest, match="damaged or truncated"):
        read_all(path)


def test_import_progress_body() -> None:
    progress = ImportProgress(file="s3://b/us.jsonl.gz", format="jsonl", rows=3, done=True)
    assert msgspec.json.decode(msgspec.json.encode(progress)) == {
        "file": "s3://b/us.jsonl.gz",
        "format": "jsonl",
        "rows": 3,
        "errors": 0,
        "done": True,
    }
