"""The reporting dashboard: the files of m1lite/static/ui/ served at /ui/ (and /ui redirects).

Plain ES modules, CSS and SVG, no build step. Loading them needs no token (the page asks
for one at login; every data call carries it). The set of files is read once per process
from the package, so only names in it are served: a request path is a dictionary key,
never a file system path. Bodies are gzipped when the client accepts it, with a strong
ETag. Cache-Control is `no-cache` (revalidate every time, a cheap 304): the modules import
each other by plain names, so after an upgrade a browser must not mix cached old modules
with new ones. The Content-Security-Policy allows nothing but this origin: no inline
script, no eval, no third-party hosts, no framing.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route

from m1lite.api import error_response
from m1lite.api.static import Script, make_script, respond
from m1lite.errors import NotFound

UI_DIR = ("static", "ui")
INDEX = "index.html"
CACHE_CONTROL = "no-cache"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
TEXT = "text/plain; charset=utf-8"  # anything unlisted
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def content_type(name: str) -> str:
    dot = name.rfind(".")
    return CONTENT_TYPES.get(name[dot:].lower(), TEXT) if dot > name.rfind("/") else TEXT


def _walk(folder: Traversable, prefix: str, found: dict[str, Script]) -> None:
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            _walk(entry, f"{prefix}{entry.name}/", found)
        else:
            found[prefix + entry.name] = make_script(entry.read_bytes())


@cache
def assets() -> dict[str, Script]:
    """Every file under static/ui, by its path relative to it ("app.js", "panels/x.js")."""
    folder = resources.files("m1lite").joinpath(*UI_DIR)
    found: dict[str, Script] = {}
    _walk(folder, "", found)
    return found


async def ui_redirect(request: Request) -> Response:
    # Relative, so that a server behind a path prefix (/m1/ui) lands on /m1/ui/.
    return RedirectResponse("ui/", status_code=308)


async def ui_file(request: Request) -> Response:
    name = request.path_params.get("path") or INDEX
    found = assets().get(name)
    if found is None:
        return error_response(NotFound(f"no dashboard file {name}"))
    return respond(
        request,
        found,
        content_type=content_type(name),
        cache_control=CACHE_CONTROL,
        extra_headers=SECURITY_HEADERS,
    )


# /ui redirects to /ui/, the page; /ui/NAME is one of its files.
UI_ROUTES = [
    Route("/ui", ui_redirect, methods=["GET"]),
    Mount("/ui", routes=[Route("/{path:path}", ui_file, methods=["GET"])]),
]
