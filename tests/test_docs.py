"""The docs keep up with the code: settings, flags and endpoints are all documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from m1lite.app import ROUTES
from m1lite.config import SETTINGS, configuration_markdown

DOCS = Path(__file__).resolve().parent.parent / "docs"
ROUTE_PATHS = [route.path for route in ROUTES]
# An endpoint's section in docs/api.md starts with a heading like: ### `/user/add`
API_HEADING = re.compile(r"^### `(/[^`]*)`$", re.MULTILINE)


@pytest.fixture(scope="module")
def serve_help() -> str:
    # The command a user runs, not the parser object: its output is what the docs promise.
    result = subprocess.run(
        [sys.executable, "-m", "m1lite", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


@pytest.fixture(scope="module")
def api_headings() -> list[str]:
    return API_HEADING.findall((DOCS / "api.md").read_text())


def test_configuration_page_is_generated_from_the_settings_table() -> None:
    written = (DOCS / "configuration.md").read_text()
    assert written == configuration_markdown(), (
        "docs/configuration.md is stale: run `.venv/bin/m1lite config-docs > docs/configuration.md`"
    )


@pytest.mark.parametrize("setting", SETTINGS, ids=[s.name for s in SETTINGS])
def test_every_setting_is_a_flag_of_serve(setting, serve_help: str) -> None:
    assert re.search(rf"(?<![\w-]){re.escape(setting.flag)}(?![\w-])", serve_help)


@pytest.mark.parametrize("path", ROUTE_PATHS)
def test_every_route_has_a_section_in_the_api_docs(path: str, api_headings: list[str]) -> None:
    assert path in api_headings


def test_the_api_docs_describe_no_route_that_does_not_exist(api_headings: list[str]) -> None:
    assert api_headings, "no endpoint headings found in docs/api.md"
    assert sorted(set(api_headings) - set(ROUTE_PATHS)) == []


def test_every_api_section_appears_once(api_headings: list[str]) -> None:
    assert len(api_headings) == len(set(api_headings))
