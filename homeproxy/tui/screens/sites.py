"""`SitesScreen`: being built (issue 4)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static


class SitesScreen(Screen[None]):
    """Sites."""

    TITLE = "Sites"

    def compose(self) -> ComposeResult:
        yield Header(icon="⇄")
        yield Static("Sites")
        yield Footer()
