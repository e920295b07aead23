"""`TrafficScreen`: being built (issue 4)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static


class TrafficScreen(Screen[None]):
    """Traffic."""

    TITLE = "Traffic"

    def compose(self) -> ComposeResult:
        yield Header(icon="⇄")
        yield Static("Traffic")
        yield Footer()
