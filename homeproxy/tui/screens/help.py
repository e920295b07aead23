"""`HelpScreen`: being built (issue 4)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static


class HelpScreen(Screen[None]):
    """Help."""

    TITLE = "Help"

    def compose(self) -> ComposeResult:
        yield Header(icon="⇄")
        yield Static("Help")
        yield Footer()
