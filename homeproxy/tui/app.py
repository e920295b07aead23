"""`HomeproxyApp`: the terminal UI around a running `Runtime`.

Screens are Textual modes (each keeps its own state): 1 Dashboard, 2 Sites,
3 Traffic, 4 Settings, 5 Discovery, 6 Certificates, ? Help; every action is
also in the command palette. The app does no I/O in `__init__` and does not
poke the engine (the exceptions are operations, not config changes: Sites'
purge of a site's cache, and Certificates' reads of the certificates and
renewing one): it edits the config through `ConfigStore`, reads `Stats` and the
`ServiceDirectory`, and drains its bus subscription (through the bridge) into
a bounded `RequestBuffer` that the screens show, into discovery batches
(toasts for names announced or in conflict; the visible screen gets the batch),
and into the `HealthBook` of upstream health (toasts when an upstream goes down
or comes back). Each screen is built with one `Services` (what it uses of the
runtime), never the app; the user's keys (`[tui.keymap]`) are applied with
`set_keymap` at start and on every config change. The caller (the CLI, or a
test) starts and stops the runtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any, ClassVar

from textual import on
from textual.app import App, ScreenStackError, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen

from homeproxy.config import Config, ConfigChanged, ConfigRejected
from homeproxy.discovery.events import DISCOVERY_EVENTS, DiscoveryEvent, NameAnnounced, NameConflict
from homeproxy.engine import ProblemReported, RequestCompleted, Stats, UpstreamHealthChanged
from homeproxy.keymap import full_keymap
from homeproxy.runtime import Runtime
from homeproxy.tui.bridge import ConfigEventArrived, RequestBuffer, drain
from homeproxy.tui.format import safe_text
from homeproxy.tui.health import HealthBook
from homeproxy.tui.screens.certificates import CertificatesScreen
from homeproxy.tui.screens.confirm import ConfirmModal
from homeproxy.tui.screens.dashboard import DashboardScreen
from homeproxy.tui.screens.discovery import DiscoveryScreen
from homeproxy.tui.screens.help import HelpScreen
from homeproxy.tui.screens.settings import SettingsScreen
from homeproxy.tui.screens.sites import SitesScreen
from homeproxy.tui.screens.traffic import TrafficScreen
from homeproxy.tui.services import Services

SCREENS = (
    ("dashboard", "1", "Dashboard", "Engine state and per-site numbers"),
    ("sites", "2", "Sites", "Add, edit, enable and remove sites"),
    ("traffic", "3", "Traffic", "The live request log"),
    ("settings", "4", "Settings", "Listeners, logging, defaults, discovery and config backups"),
    ("discovery", "5", "Discovery", "Services found on the LAN over mDNS; add one as a site"),
    ("certificates", "6", "Certificates", "HTTPS certificates, renewals, and trusting the local CA's root"),
    ("help", "question_mark", "Help", "Keys and what each screen does"),
)


SCREENS_GROUP = Binding.Group("screens", compact=True)

#: Health changes toasted one by one in a batch; the rest are counted in one more toast.
HEALTH_TOASTS = 3


class HomeproxyApp(App[None]):
    """The homeproxy terminal UI."""

    CSS_PATH = "app.tcss"
    TITLE = "homeproxy"
    MODES: ClassVar[dict[str, Any]] = {
        # Each is called with the app's `Services` (a screen never reaches for the app class);
        # Help reads the classes' bindings and HELP.
        "dashboard": DashboardScreen,
        "sites": SitesScreen,
        "traffic": TrafficScreen,
        "settings": SettingsScreen,
        "discovery": DiscoveryScreen,
        "certificates": CertificatesScreen,
        "help": HelpScreen,
    }
    BINDINGS = [
        # One compact footer group ("1 2 3 4 5 6 screens"), so each screen's own keys keep the room;
        # the header names the screen shown, and Help and the palette name every key.
        *(
            Binding(
                key,
                f"show('{mode}')",
                title,
                id=f"screen.{mode}",
                tooltip=f"{title}: {tip}",
                show=mode != "help",
                group=SCREENS_GROUP,
            )
            for mode, key, title, tip in SCREENS
        ),
        Binding(
            "f1", "show('help')", "Help", id="screen.help.f1", tooltip="Keys and what each screen does", show=False
        ),
        Binding("q", "quit", "Quit", id="quit", tooltip="Stop the proxy and leave (asks if there is unsaved work)"),
        Binding("ctrl+r", "reload", "Reload config", id="reload", tooltip="Re-read the config file now", show=False),
        Binding("ctrl+t", "change_theme", "Theme", id="theme", tooltip="Pick a colour theme", show=False),
    ]

    def __init__(self, runtime: Runtime, *, buffer_size: int = 10_000) -> None:
        super().__init__()
        self.runtime = runtime
        self.services = Services(runtime, RequestBuffer(buffer_size), HealthBook())
        """What the screens use of the runtime; each screen gets it when it is built."""
        # Textual calls a mode's factory with no arguments: each gets the services bound here.
        self._modes = {mode: partial(make, self.services) for mode, make in self.MODES.items()}
        self.requests = self.services.requests
        self.unsaved = self.services.unsaved
        """What has unsaved work (e.g. an open editor), and a description of it."""
        self._subscription = runtime.bus.subscribe(
            "tui",
            maxlen=buffer_size,
            headers=True,
            kinds=(RequestCompleted, UpstreamHealthChanged, ProblemReported, *DISCOVERY_EVENTS),
        )
        self.health = self.services.health
        """Each site upstream's health, as the engine tells it."""
        self._user_keymap: dict[str, str] = {}

    @property
    def stats(self) -> Stats:
        return self.runtime.stats

    def on_mount(self) -> None:
        self.sub_title = str(self.runtime.config_path)
        self.runtime.store.subscribe(self._on_config_event)
        self.health.refresh(self.runtime.engine)
        self._apply_keymap(self.runtime.store.config)
        self.switch_mode("dashboard")
        if self.runtime.store.created:
            self.notify(
                f"No config file was found, so homeproxy wrote a commented one to {self.runtime.config_path}",
                title="Welcome",
                timeout=15,
                markup=False,
            )
        self.set_interval(0.1, self._pump)

    # --- events from other threads -------------------------------------------------------

    def _on_config_event(self, event: ConfigChanged | ConfigRejected) -> None:
        # Called on whichever thread changed the config; post_message is thread-safe.
        self.post_message(ConfigEventArrived(event))

    def _pump(self) -> None:
        batch = drain(self._subscription)
        if batch.requests is not None:
            self.requests.extend(batch.requests.events)
            self._to_screen(batch.requests)
        if batch.discovered is not None:
            self._watch_names(batch.discovered.events)
            # The Discovery screen reads the directory again when it comes back, so a batch
            # that arrives while another screen shows is not lost to it.
            self._to_screen(batch.discovered)
        if batch.health is not None:
            self.health.record(batch.health.events)
            self.health.refresh(self.runtime.engine)
            self._toast_health(batch.health.events)
            self._to_screen(batch.health)
        for problem in batch.problems:
            # Said once when it starts and once when it ends (a full disk), never per request.
            self.notify(
                safe_text(problem.message),
                title=f"{problem.source.capitalize()} {'works again' if problem.solved else 'problem'}",
                severity="information" if problem.solved else "error",
                timeout=8 if problem.solved else 30,
                markup=False,
            )

    def _toast_health(self, events: Sequence[UpstreamHealthChanged]) -> None:
        """A toast per upstream that went down or came back; past `HEALTH_TOASTS` in one batch
        (a switch that lost every server at once), one more toast counts the rest."""
        for ev in events[:HEALTH_TOASTS]:
            # The reason may quote the upstream (an error, a status line): plain text, never markup.
            self.notify(
                safe_text(f"{ev.site}: {ev.upstream} {'is back' if ev.up else 'is down'}: {ev.reason}"),
                title="Upstream back" if ev.up else "Upstream down",
                severity="information" if ev.up else "warning",
                timeout=5 if ev.up else 10,
                markup=False,
            )
        if len(events) > HEALTH_TOASTS:
            rest = events[HEALTH_TOASTS:]
            down = sum(1 for ev in rest if not ev.up)
            self.notify(
                f"and {down} more down, {len(rest) - down} more back (press u on a site for its upstreams)",
                title="Upstreams",
                severity="warning" if down else "information",
                markup=False,
            )

    def _watch_names(self, events: Iterable[DiscoveryEvent]) -> None:
        """Toast when homeproxy starts answering for a name, and when another machine holds one."""
        announced: dict[str, tuple[str, ...]] = {}
        for ev in events:
            if isinstance(ev, NameConflict):
                # The holders are what other machines on the LAN call themselves: plain text, never markup.
                holder = " and ".join(ev.holders) if ev.holders else "another machine"
                self.notify(
                    safe_text(f"{ev.host} is already answered by {holder} on the LAN; homeproxy does not take it"),
                    title="mDNS name in use",
                    severity="error",
                    timeout=10,
                    markup=False,
                )
            elif isinstance(ev, NameAnnounced):
                announced[ev.host] = ev.addresses
        if announced:
            # One toast per batch: at start-up every site's name is announced at once.
            addresses = sorted({a for addrs in announced.values() for a in addrs})
            where = f" ({', '.join(addresses)})" if addresses else ""
            self.notify(
                safe_text(f"Answering {', '.join(announced)} on the LAN{where}"), title="mDNS", timeout=3, markup=False
            )

    def upstream_state(self, site: str, url: str) -> str:
        """The health of `site`'s upstream `url`: "up", "down", "cooling", "unchecked", or "" if unknown."""
        return self.health.state(site, url)

    @on(ConfigEventArrived)
    def _config_event(self, message: ConfigEventArrived) -> None:
        event = message.event
        if isinstance(event, ConfigChanged):
            self._apply_keymap(event.config)
            if event.source == "file":
                self.notify(
                    f"The config file changed on disk and was applied: {len(event.config.sites)} site(s).",
                    title="Config",
                    markup=False,
                )
        elif isinstance(event, ConfigRejected):
            first = str(event.errors[0]) if event.errors else "invalid config"
            more = f" (+{len(event.errors) - 1} more)" if len(event.errors) > 1 else ""
            self.notify(
                first + more,  # may quote the file: plain text, never markup
                title="Config file rejected; still serving the last good one",
                severity="error",
                timeout=10,
                markup=False,
            )
        self._to_screen(message)

    def _apply_keymap(self, config: Config) -> None:
        """The user's keys (`[tui.keymap]`); the footer, the screens and Help follow them.

        Textual is given every id (the others at their default keys), so that the footer keeps
        its order under a remap (see `full_keymap`)."""
        keymap = dict(config.tui.keymap)
        if keymap != self._user_keymap:
            self._user_keymap = keymap
            self.set_keymap(full_keymap(keymap))

    def _to_screen(self, message: Message) -> None:
        """Hand a message to the visible screen (there is none while starting or leaving)."""
        try:
            screen = self.screen
        except ScreenStackError:
            return
        screen.post_message(message)

    # --- actions -------------------------------------------------------------------------

    def action_show(self, mode: str) -> None:
        """Switch to a screen (its state is kept)."""
        if self.current_mode != mode:
            self.switch_mode(mode)

    def action_reload(self) -> None:
        """Re-read the config file now (it is also watched)."""
        self.run_worker(self._reload, thread=True, exclusive=True, group="reload")

    def _reload(self) -> None:
        # In a thread: applying waits on the engine.
        if not self.runtime.store.reload(force=True) and not self.runtime.store.last_errors:
            self.call_from_thread(self.notify, "The config file has not changed.", title="Config")

    async def action_quit(self) -> None:
        if self.unsaved:
            what = "; ".join(self.unsaved.values())
            self.push_screen(
                ConfirmModal(f"Quit without saving? Unsaved: {what}", confirm="Quit", cancel="Stay"),
                self._quit_if,
            )
            return
        self._leave()

    def _quit_if(self, confirmed: bool | None) -> None:
        if confirmed:
            self._leave()

    def _leave(self) -> None:
        self.runtime.bus.unsubscribe(self._subscription)
        self.exit()

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for mode, _key, title, tip in SCREENS:
            yield SystemCommand(f"Show {title}", tip, lambda mode=mode: self.action_show(mode))
        yield SystemCommand("Reload config", "Re-read the config file now", self.action_reload)
