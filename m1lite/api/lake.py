"""The event lake: /write, /get and /publish."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, BinaryIO

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from m1lite.api import Call, endpoint, json_response, no_content
from m1lite.errors import BadRequest, NotFound, PayloadTooLarge
from m1lite.importer import ImportProgress, guess_format, iter_items
from m1lite.params import decode_json
from m1lite.storage import log as event_log

PUBLISH_BATCH = 5_000
MAX_GET_IDS = 10_000


@endpoint(rights=("publish",))
async def write(call: Call) -> Response:
    """Archive items and (by default) publish them into the data stores."""
    params = call.params
    items = params.json("items", required=True)
    if not isinstance(items, list):
        raise BadRequest("items must be a JSON array of objects", code="invalid_items")
    limit = call.env.config.max_items_per_write
    if len(items) > limit:
        raise PayloadTooLarge(
            f"{len(items)} items in one write; at most {limit} are accepted",
            code="too_many_items",
        )
    publish = params.boolean("publish", True)
    is_async = params.boolean("async", True)
    await call.env.writer.room_for(len(items))
    future = call.env.submit(items, call.client_ip, published=publish, durable=not is_async)
    if future is None:
        return no_content()
    keys = await asyncio.shield(future)
    return json_response(keys)


def parse_ids(value: Any) -> list[int]:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            value = decode_json(text.encode(), what="ids")
        else:
            value = [part for part in text.split(",") if part.strip()]
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list):
        raise BadRequest("ids must be a comma list or a JSON array of _m1key values")
    if len(value) > MAX_GET_IDS:
        raise BadRequest(f"at most {MAX_GET_IDS} ids per /get", code="too_many_ids")
    keys = []
    for item in value:
        try:
            if isinstance(item, (bool, float)):
                raise ValueError
            keys.append(int(item.strip()) if isinstance(item, str) else int(item))
        except (ValueError, TypeError, AttributeError):
            raise BadRequest(f"not an _m1key: {item!r}", code="bad_parameter") from None
    return keys


@endpoint(rights=("get",))
async def get(call: Call) -> Response:
    """Lake records by `_m1key`, in the order asked, unknown keys left out."""
    raw = call.params.raw("ids")
    if raw is None:
        raise BadRequest("missing parameter: ids", code="missing_parameter")
    keys = parse_ids(raw)
    return json_response(event_log.get_records(call.env.lake, keys))


@endpoint(rights=("publish",))
async def publish(call: Call) -> Response:
    """Load a file into the lake: an upload (multipart `file`) or a path in DATA/import/."""
    params = call.params
    upload = call.params.files.get("file")
    import_dir = (call.env.config.data / "import").resolve()
    if upload is not None:
        name = upload.filename or "upload"
        stream: BinaryIO = upload.file
    else:
        name = params.required_str("file")
        path = _import_path(import_dir, name)
        stream = path.open("rb")
    try:
        fmt = params.string("format")
        compression = params.string("compression")
        if fmt is None:
            fmt, guessed = guess_format(name)
            compression = compression or guessed
        elif compression is None and name.endswith((".gz", ".zip")):
            compression = "gz" if name.endswith(".gz") else "zip"
        progress = await _load(call, stream, name, fmt, compression)
    finally:
        stream.close()
    return json_response(progress)


def _import_path(import_dir: Path, name: str) -> Path:
    """Only files inside DATA/import/ may be published by path."""
    for prefix in ("s3://", "gs://"):
        if name.startswith(prefix):
            raise BadRequest(
                "m1lite has no cloud buckets: upload the file (multipart 'file') or put it "
                f"in {import_dir} and name it relative to that folder",
                code="unsupported_source",
            )
    path = (import_dir / name).resolve()
    if not path.is_relative_to(import_dir):
        raise BadRequest(f"file must be inside {import_dir}", code="outside_import_dir")
    if not path.is_file():
        raise NotFound(f"no file {name} in {import_dir}", code="no_such_file")
    return path


async def _load(
    call: Call, stream: BinaryIO, name: str, fmt: str, compression: str | None
) -> ImportProgress:
    params = call.params
    max_rows = params.integer("rows", -1)
    reader = iter_items(
        stream,
        fmt=fmt,
        compression=compression,
        encoding=params.string("encoding") or "utf-8",
        delimiter=params.string("delimiter"),
        headers=params.boolean("headers", True),
        max_rows=None if max_rows < 0 else max_rows,
    )
    progress = ImportProgress(file=name, format=fmt, rows=0, errors=0, done=False)
    while True:
        # Parsing runs in a thread so a large file does not stall other requests.
        try:
            batch = await run_in_threadpool(_next_batch, reader)
        except BadRequest as error:
            if progress.rows:
                error.message += f" ({progress.rows} rows before it were loaded)"
            raise
        if not batch:
            break
        future = call.env.submit(batch, call.client_ip, durable=True)
        assert future is not None
        progress.rows += len(await asyncio.shield(future))
    progress.done = True
    return progress


def _next_batch(reader: Any) -> list[dict[str, Any]]:
    batch = []
    for item in reader:
        batch.append(item)
        if len(batch) >= PUBLISH_BATCH:
            break
    return batch
