"""The browser scripts: `/m1.js` and the guide's copy-into-your-site pair under `/js/`.

`/m1.js` is `js/M1Events.js` followed by `m1.js` (the few lines that read the script tag's
data-* attributes), both without their comment lines: one implementation of the tracker,
served small. The pair is served as written, comments and all, since people read and edit
it. No token is needed. Bodies are built once per process, with a strong ETag and a short
Cache-Control, so a server upgrade reaches browsers within minutes and a revalidation costs
a 304; clients that accept gzip get the compressed bytes.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

CONTENT_TYPE = "text/javascript; charset=utf-8"
CACHE_CONTROL = "public, max-age=300"


@dataclass(frozen=True, slots=True)
class Script:
    body: bytes
    gzipped: bytes
    etag: str  # of the identity body; the gzipped body's ETag adds "-gz"


def _read(name: str) -> str:
    resource = resources.files("m1lite").joinpath("static", *name.split("/"))
    return resource.read_text(encoding="utf-8")


def strip_comments(source: str) -> str:
    """Drop whole-line `//` comments, indentation and blank lines.

    Only safe for sources written for it: no `//` comment after code on a line, and no
    string or template literal spanning lines (the scripts here keep to that).
    """
    lines = (line.strip() for line in source.splitlines())
    return "\n".join(line for line in lines if line and not line.startswith("//")) + "\n"


def m1_js_source() -> str:
    return strip_comments(_read("js/M1Events.js")) + strip_comments(_read("m1.js"))


def make_script(body: bytes) -> Script:
    """A body with its gzipped bytes and strong ETag."""
    digest = hashlib.sha256(body).hexdigest()[:20]
    # mtime=0: the same bytes, and so the same ETag, on every start.
    return Script(body, gzip.compress(body, 9, mtime=0), f'"{digest}"')


@cache
def script(path: str) -> Script:
    if path == "/m1.js":
        return make_script(m1_js_source().encode("utf-8"))
    return make_script(_read(path.lstrip("/")).encode("utf-8"))


def _accepts_gzip(request: Request) -> bool:
    for part in request.headers.get("accept-encoding", "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() == "gzip" and params.replace(" ", "") not in ("q=0", "q=0.0"):
            return True
    return False


def _matches(if_none_match: str, etag: str) -> bool:
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def respond(
    request: Request,
    found: Script,
    *,
    content_type: str = CONTENT_TYPE,
    cache_control: str = CACHE_CONTROL,
    extra_headers: dict[str, str] | None = None,
) -> Response:
    """200 with the (maybe gzipped) body, or 304 when the client's ETag matches."""
    gz = _accepts_gzip(request)
    etag = found.etag[:-1] + '-gz"' if gz else found.etag
    headers = {
        "ETag": etag,
        "Cache-Control": cache_control,
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
        **(extra_headers or {}),
    }
    if _matches(request.headers.get("if-none-match", ""), etag):
        return Response(status_code=304, headers=headers)
    if gz:
        headers["Content-Encoding"] = "gzip"
    return Response(found.gzipped if gz else found.body, 200, headers, media_type=content_type)


def _endpoint(path: str) -> Callable[[Request], Awaitable[Response]]:
    async def serve(request: Request) -> Response:
        return respond(request, script(path))

    serve.__name__ = "serve_" + path.strip("/").replace("/", "_").replace(".", "_")
    return serve


m1_js = _endpoint("/m1.js")
m1events_js = _endpoint("/js/M1Events.js")
instrumentation_js = _endpoint("/js/instrumentation.js")
