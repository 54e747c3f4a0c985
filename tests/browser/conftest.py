"""The browser tests' fixtures live in support/browser.py (see there)."""

from support.browser import browser, collector, guarded_collector, incident_db, open_page

__all__ = ["browser", "collector", "guarded_collector", "incident_db", "open_page"]
