"""Helpers for the browser tests: Debian's chromium driven by playwright, and a test site.

Playwright never downloads a browser here: it launches the system chromium (`apt-get install
chromium`; `.ci/run` does). Host names the pages are served under are mapped to 127.0.0.1 by
chromium's --host-resolver-rules, as the guide's hosts-file entry does.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Playwright

from integration.server import Server

CHROMIUM = os.environ.get("M1LITE_TEST_CHROMIUM", "/usr/bin/chromium")
SITE = Path(__file__).resolve().parents[2] / "examples" / "site"
WHITELISTED = "localhost.somethingunique"
NOT_LISTED = "notlisted.example"
INSTRUMENT_PASSWORD = "ChangeMeNow!"

T = TypeVar("T")


def launch(playwright: Playwright) -> Browser:
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(
            f"no chromium at {CHROMIUM}: `apt-get install chromium` (.ci/run does), "
            "or point M1LITE_TEST_CHROMIUM at one"
        )
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--host-resolver-rules=MAP {WHITELISTED} 127.0.0.1, MAP {NOT_LISTED} 127.0.0.1",
        ],
    )


# -- the site -----------------------------------------------------------------------------

INSTRUMENTATION_BLOCK = re.compile(
    r"  <!-- m1 instrumentation.*?<!-- /m1 instrumentation -->\n", re.DOTALL
)


def uncomment_sample(source: str, name: str) -> str:
    """What a user does in an editor: remove one `// ` from each line of a SAMPLE block."""
    begin = source.index(f"// BEGIN SAMPLE {name}\n")
    end = source.index(f"// END SAMPLE {name}\n", begin)
    lines = source[begin:end].splitlines(keepends=True)
    opened = [lines[0]] + [re.sub(r"^(\s*)// ", r"\1", line, count=1) for line in lines[1:]]
    return source[:begin] + "".join(opened) + source[end:]


def set_parameter(source: str, name: str, value: Any) -> str:
    """Edit one line of instrumentation.js's REQUIRED PARAMETERS: `var NAME = value;`."""
    pattern = re.compile(rf"^(\s*var {name} = ).*;$", re.MULTILINE)
    edited, count = pattern.subn(lambda m: m.group(1) + json.dumps(value) + ";", source)
    assert count == 1, f"no single `var {name} = ...;` line in instrumentation.js"
    return edited


def site_with_pair(
    target: Path,
    server: Server,
    *,
    user: str,
    heartbeat_ms: int,
    session_store: str | None = None,
    samples: tuple[str, ...] = (),
) -> Path:
    """examples/site with the guide's pair downloaded into js/ and its parameters set."""
    shutil.copytree(SITE, target)
    (target / "js").mkdir(exist_ok=True)
    library = server.get("/js/M1Events.js")
    assert library.status_code == 200, library.text
    (target / "js" / "M1Events.js").write_bytes(library.content)
    source = server.get("/js/instrumentation.js").text
    for name, value in {
        "M1_ENVIRONMENT_URL": server.url,
        "M1_USER": user,
        "M1_PASSWORD": INSTRUMENT_PASSWORD,
        "HEARTBEAT_INTERVAL_MS": heartbeat_ms,
        "M1_SESSION_STORE": session_store,
    }.items():
        source = set_parameter(source, name, value)
    for sample in samples:
        source = uncomment_sample(source, sample)
    (target / "js" / "instrumentation.js").write_text(source)
    return target


def site_with_m1js(target: Path, server: Server, **attributes: str | int) -> Path:
    """examples/site with the one-tag embed instead of the pair: data-* from `attributes`."""
    shutil.copytree(SITE, target)
    data = "".join(
        f' data-{name.replace("_", "-")}="{value}"' for name, value in attributes.items()
    )
    tag = f'  <script src="{server.url}/m1.js"{data}></script>\n'
    for page in target.glob("*.html"):
        html = page.read_text()
        assert INSTRUMENTATION_BLOCK.search(html), page
        page.write_text(INSTRUMENTATION_BLOCK.sub(lambda _: tag, html))
    return target


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_site(directory: Path) -> Iterator[int]:
    """A static file server on 127.0.0.1 for the site; yields its port."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


# -- what the browser said ----------------------------------------------------------------


@dataclass
class Console:
    """Console messages of type error, and uncaught page errors, of every page of a context."""

    errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def attach(self, context: BrowserContext) -> Console:
        context.on("console", self._message)
        context.on("weberror", lambda web_error: self.page_errors.append(str(web_error.error)))
        return self

    def _message(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)
        elif message.type == "warning":
            self.warnings.append(message.text)


# -- what the server stored ---------------------------------------------------------------


def wait_for(
    probe: Callable[[], T | None],
    what: str,
    timeout: float = 20.0,
    show: Callable[[], object] | None = None,
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` (and what `show`
    returns, to see how far things got) after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            seen = f"; last seen: {show()!r}" if show is not None else ""
            raise AssertionError(f"timed out waiting for {what}{seen}")
        time.sleep(0.2)


def query(server: Server, q: str, fl: str = "*", rows: int = 1000) -> list[dict[str, Any]]:
    response = server.post(
        "/query",
        server.admin_token(),
        data={"store": "index", "q": q, "rows": str(rows), "fl": fl},
    )
    assert response.status_code == 200, response.text
    docs: list[dict[str, Any]] = response.json()["response"]["docs"]
    return docs


def session_events(server: Server, session_id: str) -> list[dict[str, Any]]:
    """A session's events in the order they happened (event time, then arrival)."""
    docs = query(server, f'session.id:"{session_id}"')
    return sorted(docs, key=lambda doc: (doc["event.time"], doc["_m1key"]))


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == kind]


def session_store(server: Server, store: str, session_id: str) -> list[dict[str, Any]]:
    response = server.post(
        "/session/query",
        server.admin_token(),
        data={"store": store, "q": f'session.id:"{session_id}"'},
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items
