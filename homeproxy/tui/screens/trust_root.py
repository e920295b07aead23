"""`TrustRootModal`: the local CA's root full screen, its QR code, fingerprint and the steps to trust it."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer

from homeproxy.tui.widgets.root_panel import RootInfo, RootPanel


class TrustRootModal(ModalScreen[None]):
    """The root's QR code, fingerprint, download URL and the steps per platform, full screen."""

    BINDINGS = [
        Binding("escape,t", "close", "Close", id="trust-root.close", tooltip="Back to the certificates"),
    ]

    def __init__(self, root: RootInfo | None) -> None:
        super().__init__()
        self.root = root

    def compose(self) -> ComposeResult:
        with Vertical(id="trust-root"):
            yield RootPanel(id="trust-root-panel")
        yield Footer()

    def on_mount(self) -> None:
        frame = self.query_one("#trust-root", Vertical)
        frame.border_title = Text("Trust homeproxy's root")
        frame.border_subtitle = Text("esc close")
        self.query_one(RootPanel).show(self.root)

    def action_close(self) -> None:
        self.dismiss(None)
