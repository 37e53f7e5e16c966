"""Reading /publish files: JSON, JSON lines, CSV and delimited text, plain, gzip or zip.

`iter_items` checks its arguments when called and then yields one event (a dict) at a time,
so a large JSON-lines or CSV file is never held in memory whole. Input errors become
BadRequest with the 1-based line number of the decompressed file; note they can surface
mid-iteration, after earlier rows were already yielded.

CSV cells stay strings: typing is the schema's job (`Schema.coerce`), so a declared integer
column becomes numbers and an undeclared one is kept exactly as written.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Generator, Iterable, Iterator
from typing import IO, Any, BinaryIO, Final, cast

import msgspec

from m1lite.errors import BadRequest, PayloadTooLarge

__all__ = [
    "COMPRESSIONS",
    "FORMATS",
    "ImportProgress",
    "guess_format",
    "iter_items",
]

FORMATS: Final = ("json", "jsonl", "csv", "txt")
COMPRESSIONS: Final = ("gz", "zip")
DEFAULT_MAX_JSON_BYTES: Final = 256 * 1024 * 1024

_FORMAT_SUFFIXES: Final = {
    "json": "json",
    "jsonl": "jsonl",
    "ndjson": "jsonl",
    "csv": "csv",
    "txt": "txt",
    "tsv": "txt",
}
_COMPRESSION_SUFFIXES: Final = {"gz": "gz", "gzip": "gz", "zip": "zip"}
_DEFAULT_DELIMITERS: Final = {"csv": ",", "txt": "\t"}
_BYTE_OFFSET_RE: Final = re.compile(r"\(byte (\d+)\)")

# What a damaged gzip or zip stream raises while being read.
_DECOMPRESS_ERRORS: Final = (gzip.BadGzipFile, zipfile.BadZipFile, zlib.error, EOFError)


class ImportProgress(msgspec.Struct):
    """The /publish response body."""

    file: str
    format: str
    rows: int = 0
    errors: int = 0
    done: bool = False


def guess_format(filename: str) -> tuple[str, str | None]:
    """(format, compression) from a name such as `us.jsonl.gz` or `s3://b/x.csv`.

    `.ndjson` reads as jsonl and `.tsv` as txt (tab-delimited).
    """
    base = filename.rstrip("/").rsplit("/", 1)[-1]
    parts = base.lower().split(".")
    compression = None
    if len(parts) > 1 and parts[-1] in _COMPRESSION_SUFFIXES:
        compression = _COMPRESSION_SUFFIXES[parts.pop()]
    fmt = _FORMAT_SUFFIXES.get(parts[-1]) if len(parts) > 1 else None
    if fmt is None:
        raise BadRequest(
            f"cannot tell the format of {base!r} from its name; pass format ({', '.join(FORMATS)})"
        )
    return fmt, compression


def iter_items(
    stream: BinaryIO,
    *,
    fmt: str,
    compression: str | None,
    encoding: str = "utf-8",
    delimiter: str | None = None,
    headers: bool = True,
    max_rows: int | None = None,
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES,
) -> Iterator[dict[str, Any]]:
    """Events from a /publish file; arguments are checked now, the file is read lazily.

    `max_rows` None or negative means all rows. `max_json_bytes` caps a `json` file after
    decompression (413 beyond it): that format is decoded whole, unlike the others. `stream`
    is left open; the caller owns it.
    """
    if fmt not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    if compression is not None and compression not in COMPRESSIONS:
        raise BadRequest(f"compression must be gz or zip (got {compression!r})")
    try:
        codec_name = codecs.lookup(encoding).name
        # str.encode refuses codecs that are not text encodings (base64, rot13...).
        '\n,;\t"'.encode(codec_name)
    except (LookupError, UnicodeError):
        raise BadRequest(f"unknown or unsupported encoding {encoding!r}") from None
    sep = _delimiter(fmt, delimiter)
    if sep is not None and not headers:
        raise BadRequest(
            "headers=false needs a TransformRuleSet to name the columns, and m1lite does not "
            "support rules; add a header row to the file"
        )
    opened: list[IO[bytes]] = []
    raw = _decompressed(stream, compression, opened)
    items: Generator[dict[str, Any], None, None]
    if fmt == "json":
        items = _json_items(raw, codec_name, max_json_bytes)
    elif fmt == "jsonl":
        items = _jsonl_items(raw, codec_name)
    else:
        assert sep is not None
        items = _delimited_items(raw, codec_name, sep)
    return _guarded(items, opened, max_rows)


def _delimiter(fmt: str, delimiter: str | None) -> str | None:
    if fmt not in _DEFAULT_DELIMITERS:
        return None
    if delimiter is None or delimiter == "":
        return _DEFAULT_DELIMITERS[fmt]
    if delimiter == "\\t":
        # What a shell user types for a tab when nothing interprets the escape.
        return "\t"
    if len(delimiter) != 1 or delimiter in '\r\n"':
        raise BadRequest(
            f"delimiter must be one character other than a quote or newline (got {delimiter!r})"
        )
    return delimiter


def _decompressed(stream: BinaryIO, compression: str | None, opened: list[IO[bytes]]) -> IO[bytes]:
    """The decompressed byte stream; anything opened on the way is appended to `opened`."""
    if compression is None:
        return stream
    if compression == "gz":
        # typeshed does not count GzipFile as an IO[bytes]; it is one in every way used here.
        gz = cast(IO[bytes], gzip.GzipFile(fileobj=stream, mode="rb"))
        opened.append(gz)
        return gz
    source: IO[bytes] = stream
    if not stream.seekable():
        # zipfile reads the central directory at the end, so it needs to seek.
        # Not a `with`: it must outlive this function; _guarded closes it via `opened`.
        spool = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)  # noqa: SIM115
        opened.append(spool)
        shutil.copyfileobj(stream, spool)
        spool.seek(0)
        source = spool
    try:
        archive = zipfile.ZipFile(source)
    except zipfile.BadZipFile as exc:
        raise BadRequest(f"not a readable zip archive: {exc}") from None
    # Folders and the resource forks macOS adds are not data files.
    members = [
        info
        for info in archive.infolist()
        if not info.is_dir() and not info.filename.startswith("__MACOSX/")
    ]
    if not members:
        raise BadRequest("the zip archive holds no file")
    if len(members) > 1:
        names = ", ".join(info.filename for info in members[:5])
        raise BadRequest(
            f"the zip archive holds {len(members)} files ({names}); m1lite loads one file "
            "per archive"
        )
    try:
        member = archive.open(members[0])
    except (RuntimeError, NotImplementedError) as exc:
        # Encrypted members and unsupported compression methods.
        raise BadRequest(f"cannot read {members[0].filename!r} in the zip archive: {exc}") from None
    opened.append(member)
    return member


def _guarded(
    items: Generator[dict[str, Any], None, None], opened: list[IO[bytes]], max_rows: int | None
) -> Iterator[dict[str, Any]]:
    """Apply max_rows, turn damaged-archive errors into 400s, and close what we opened."""
    try:
        if max_rows is None or max_rows < 0:
            yield from items
        elif max_rows > 0:
            for count, item in enumerate(items, 1):
                yield item
                if count >= max_rows:
                    break
    except _DECOMPRESS_ERRORS as exc:
        raise BadRequest(f"the compressed file is damaged or truncated: {exc}") from None
    finally:
        items.close()
        for handle in reversed(opened):
            handle.close()


def _is_utf8(codec_name: str) -> bool:
    return codec_name in ("utf-8", "utf-8-sig")


def _text_lines(raw: IO[bytes], codec_name: str) -> Iterator[str]:
    """Decoded lines (ends kept), with a 400 naming the line that does not decode.

    For encodings where a newline is the byte 0x0A (UTF-8, Latin-1, cp1252, Shift-JIS...)
    each line is decoded on its own, so the line number in an error is exact. UTF-16/32 need
    a decoding layer that works in blocks; there the number is where the block began.
    """
    if '\n,;\t"'.encode(codec_name) != b'\n,;\t"':
        wrapper = io.TextIOWrapper(raw, encoding=codec_name, newline="")
        number = 0
        try:
            for text in wrapper:
                number += 1
                yield text
        except UnicodeDecodeError:
            raise BadRequest(f"near line {number + 1}: not valid {codec_name}") from None
        finally:
            # Detach so that dropping the wrapper does not close a stream we do not own.
            wrapper.detach()
        return
    strip_bom = _is_utf8(codec_name)
    for number, line in enumerate(raw, 1):
        if strip_bom and number == 1:
            # Spreadsheet exports like to start with a byte-order mark, which would
            # otherwise become part of the first column's name.
            line = line.removeprefix(codecs.BOM_UTF8)
        try:
            yield line.decode(codec_name)
        except UnicodeDecodeError:
            raise BadRequest(f"line {number}: not valid {codec_name}") from None


def _json_items(
    raw: IO[bytes], codec_name: str, max_json_bytes: int
) -> Generator[dict[str, Any], None, None]:
    data = raw.read(max_json_bytes + 1)
    if len(data) > max_json_bytes:
        raise PayloadTooLarge(
            f"JSON files are read whole and this one exceeds {max_json_bytes} bytes; "
            "use the jsonl format for large files"
        )
    text: bytes | str
    if _is_utf8(codec_name):
        text = data.removeprefix(codecs.BOM_UTF8)
    else:
        try:
            text = data.decode(codec_name)
        except UnicodeDecodeError as exc:
            raise BadRequest(f"{_place(data, exc.start)}: not valid {codec_name}") from None
    del data
    try:
        decoded = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        match = _BYTE_OFFSET_RE.search(str(exc))
        where = _place(text, int(match.group(1))) if match else "the file"
        raise BadRequest(f"{where}: invalid JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{_place(text, exc.start)}: not valid UTF-8") from None
    except RecursionError:
        raise BadRequest("JSON nesting too deep") from None
    del text
    if isinstance(decoded, dict):
        yield decoded
        return
    if not isinstance(decoded, list):
        raise BadRequest("a json file must hold an object or an array of objects")
    # Pop from the end of a reversed list so each event can be freed once it has been used,
    # instead of keeping the whole decoded file alive until the last row.
    decoded.reverse()
    number = 0
    while decoded:
        item = decoded.pop()
        number += 1
        if not isinstance(item, dict):
            raise BadRequest(f"item {number} of the array is {_json_kind(item)}, not an object")
        yield item


def _place(text: bytes | str, offset: int) -> str:
    """`line N` for a character/byte offset into `text`."""
    lines = text.count(b"\n", 0, offset) if isinstance(text, bytes) else text.count("\n", 0, offset)
    return f"line {lines + 1}"


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _jsonl_items(raw: IO[bytes], codec_name: str) -> Generator[dict[str, Any], None, None]:
    # msgspec decodes UTF-8 bytes itself, so the common case skips the text layer entirely.
    lines: Iterable[bytes | str] = raw if _is_utf8(codec_name) else _text_lines(raw, codec_name)
    decoder = msgspec.json.Decoder()
    for number, line in enumerate(lines, 1):
        if number == 1 and isinstance(line, bytes):
            line = line.removeprefix(codecs.BOM_UTF8)
        if not line.strip():
            continue
        try:
            item = decoder.decode(line)
        except msgspec.DecodeError as exc:
            raise BadRequest(f"line {number}: invalid JSON ({exc})") from None
        except UnicodeDecodeError:
            raise BadRequest(f"line {number}: not valid UTF-8") from None
        except RecursionError:
            raise BadRequest(f"line {number}: JSON nesting too deep") from None
        if not isinstance(item, dict):
            raise BadRequest(f"line {number}: expected a JSON object, got {_json_kind(item)}")
        yield item


def _delimited_items(
    raw: IO[bytes], codec_name: str, sep: str
) -> Generator[dict[str, Any], None, None]:
    reader = csv.reader(_text_lines(raw, codec_name), delimiter=sep, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        columns = _columns(header)
        width = len(columns)
        for row in reader:
            if len(row) > width:
                raise BadRequest(
                    f"line {reader.line_num}: {len(row)} fields but the header names {width}"
                )
            item: dict[str, Any] = {}
            for column, cell in zip(columns, row, strict=False):
                if not cell:
                    continue
                if column is None:
                    raise BadRequest(
                        f"line {reader.line_num}: a value in a column with no name in the header"
                    )
                item[column] = cell
            # Blank lines and rows of empty cells carry no event.
            if item:
                yield item
    except csv.Error as exc:
        raise BadRequest(f"line {reader.line_num}: {exc}") from None


def _columns(header: list[str]) -> list[str | None]:
    """Column names from the header row; None for an unnamed column.

    An unnamed column is tolerated (many exports end every line with a delimiter) as long as
    no row puts a value in it.
    """
    columns: list[str | None] = []
    seen: set[str] = set()
    for cell in header:
        name = cell.strip()
        if not name:
            columns.append(None)
            continue
        if name in seen:
            raise BadRequest(f"line 1: column {name!r} appears twice in the header")
        seen.add(name)
        columns.append(name)
    return columns
