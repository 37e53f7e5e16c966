"""The dashboard tests' fixtures (tests/integration/dashboard.py), defined once here so
that the session-scoped `dash` server is filled once for all test_dashboard*.py modules
(a fixture imported into each module would be a separate fixture per module)."""

from integration.dashboard import dash, dash_browser, open_tab

__all__ = ["dash", "dash_browser", "open_tab"]
