"""The Discovery screen, driven through Pilot: fed by real zeroconf on loopback, and by canned
services put into the runtime's directory (their events published on the real bus)."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from textual.content import Content
from textual.pilot import Pilot
from textual.widgets import Checkbox, Input, Static, TabbedContent
from zeroconf import ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from homeproxy.config import parse_config
from homeproxy.config.model import Upstream
from homeproxy.discovery.events import NameAnnounced, NameConflict, ServiceFound, ServiceLost, ServiceUpdated
from homeproxy.discovery.service import DiscoveredService, slugify
from homeproxy.runtime import Runtime
from homeproxy.tui.app import HomeproxyApp
from homeproxy.tui.screens.discovery import DiscoveryScreen, suggest_site
from homeproxy.tui.screens.help import HelpScreen
from homeproxy.tui.screens.settings import SettingsScreen
from homeproxy.tui.screens.site_editor import SiteEditorModal
from homeproxy.tui.widgets.service_table import ServiceTable
from tests.tui.conftest import make_service as service
from tests.tui.conftest import write_config
from tests.tui.test_help import plain
from tests.waiting import wait_for

HOSTILE = "[red]x[/] [@click=app.quit]q"


def found(runtime: Runtime, *services: DiscoveredService) -> None:
    """As discovery does: into the directory, then the event on the bus."""
    for s in services:
        previous = runtime.directory.upsert(s)
        if isinstance(previous, DiscoveredService):
            runtime.bus.publish(ServiceUpdated(s, previous))
        elif previous is None:
            runtime.bus.publish(ServiceFound(s))


def lost(runtime: Runtime, s: DiscoveredService) -> None:
    runtime.directory.remove(s.name)
    runtime.bus.publish(ServiceLost(s))


async def open_discovery(app: HomeproxyApp, pilot: Pilot[None]) -> DiscoveryScreen:
    await pilot.press("5")
    await wait_for(lambda: isinstance(app.screen, DiscoveryScreen), description="the Discovery screen")
    screen = app.screen
    assert isinstance(screen, DiscoveryScreen)
    return screen


def names(screen: DiscoveryScreen) -> list[str]:
    table = screen.table
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


def text_of(screen: DiscoveryScreen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


def toasts(app: HomeproxyApp) -> list[str]:
    """What the toasts say, as shown (their markup read, if they have any)."""
    return [Content.from_markup(n.message).plain if n.markup else n.message for n in app._notifications]


def screen_text(app: HomeproxyApp) -> str:
    """Every line of the screen as drawn."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


# --- fed by real zeroconf ----------------------------------------------------------------


@pytest.fixture
async def mdns_runtime(tmp_path: Path, backend: int) -> AsyncIterator[Runtime]:
    """A started Runtime with discovery on, browsing only on loopback."""
    path = tmp_path / "config.toml"
    write_config(path, backend)
    with path.open("a", encoding="utf-8") as f:
        f.write('\n[discovery]\ninterfaces = ["127.0.0.1"]\nservice_types = ["_http._tcp"]\nbrowse_all_types = false\n')
    rt = Runtime(path, log_dir=tmp_path / "log", discovery=True)
    await asyncio.to_thread(rt.start)
    yield rt
    await asyncio.to_thread(rt.stop)


async def test_a_service_found_by_real_mdns_becomes_a_site_that_serves(mdns_runtime: Runtime, backend: int) -> None:
    runtime = mdns_runtime
    # Unique per run: another run on this host (loopback mDNS is shared) may advertise at the same time,
    # and two peers claiming one name would make zeroconf rename or reject it.
    token = secrets.token_hex(4)
    instance = f"Hostile [red]x[/] {token}"
    slug = slugify(instance)
    info = ServiceInfo(
        "_http._tcp.local.",
        f"{instance}._http._tcp.local.",
        addresses=[socket.inet_aton("127.0.0.1")],
        port=backend,
        properties={"path": "/ui"},
        server=f"nas-{token}.local.",
    )
    peer = AsyncZeroconf(interfaces=["127.0.0.1"])
    try:
        await (await peer.async_register_service(info))
        app = HomeproxyApp(runtime)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_discovery(app, pilot)
            await wait_for(
                lambda: instance in names(screen) and screen.selected is not None and screen.selected.resolved,
                timeout=20,
                description="the service in the table, resolved",
            )
            row = screen.table.get_row_at(names(screen).index(instance))
            # The config's one site already forwards to the backend's URL: it maps the service too.
            assert str(row[2]) == f"127.0.0.1:{backend}" and str(row[3]) == "/ui" and str(row[4]) == "files"
            assert "127.0.0.1" in text_of(screen, "#discovery-status")  # the interface browsed

            screen.table.move_cursor(row=names(screen).index(instance))
            await pilot.press("enter")
            await wait_for(lambda: isinstance(app.screen, SiteEditorModal), description="the site editor")
            editor = app.screen
            assert isinstance(editor, SiteEditorModal)
            assert editor.form.typed("name") == slug
            assert editor.form.typed("hosts") == f"{slug}.local, {slug}.home.arpa"
            assert editor.form.upstreams.urls() == [f"mdns://{instance}._http._tcp/ui"]
            assert f"http://127.0.0.1:{backend}/ui" in str(editor.query_one("#editor-note", Static).render())

            await pilot.press("ctrl+s")
            await wait_for(lambda: runtime.store.config.site(slug) is not None, description="the site saved")
            await wait_for(lambda: isinstance(app.screen, DiscoveryScreen), description="back on Discovery")
            await wait_for(
                # (cut to the column's width)
                lambda: str(screen.table.get_row_at(names(screen).index(instance))[4]).startswith("files, hostile-"),
                description="the new site against the service",
            )

            assert runtime.engine is not None
            port = runtime.engine.addresses[0][1]
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{port}/page", headers={"Host": f"{slug}.local"}) as r,
            ):
                assert (r.status, await r.text()) == (200, "hello from backend /ui/page")
    finally:
        await peer.async_unregister_all_services()
        await peer.async_close()


# --- fed by canned services ----------------------------------------------------------


async def test_a_hostile_name_shows_literally_and_does_nothing(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_discovery(app, pilot)
        found(runtime, service(HOSTILE, host="[b]nas.local."))
        await wait_for(lambda: names(screen) == [HOSTILE], description="the hostile row")
        await pilot.pause()
        shown = screen_text(app)
        assert HOSTILE in shown and "[b]nas.local." in shown  # the detail line too
        # Clicking the name (where "[@click=app.quit]" would act, were it markup) selects the row.
        await pilot.click(ServiceTable, offset=(12, 1))
        await wait_for(lambda: isinstance(app.screen, SiteEditorModal), description="the site editor")
        assert app.is_running
        assert HOSTILE in str(app.screen.query_one("#editor-note", Static).render())
        editor = app.screen
        assert isinstance(editor, SiteEditorModal) and editor.form.typed("name") == "red-x-click-app-quit-q"


async def test_the_cursor_stays_on_its_service_when_others_come_change_and_go(runtime: Runtime) -> None:
    a, b, c = service("Bravo"), service("Delta"), service("Foxtrot")
    found(runtime, a, b, c)
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_discovery(app, pilot)
        assert names(screen) == ["Bravo", "Delta", "Foxtrot"]
        screen.table.move_cursor(row=1)
        await pilot.pause()
        assert screen.table.selected_key == b.key

        found(runtime, service("Alpha"), service("Charlie"))  # both sort before Delta
        await wait_for(lambda: screen.table.row_count == 5, description="two new rows")
        assert names(screen) == ["Alpha", "Bravo", "Charlie", "Delta", "Foxtrot"]
        assert screen.table.selected_key == b.key and screen.table.cursor_row == 3

        found(runtime, replace(b, addresses=("192.0.2.99",), port=8080))
        await wait_for(lambda: str(screen.table.get_row(b.key)[2]) == "192.0.2.99:8080", description="new address")
        assert screen.table.selected_key == b.key
        assert "192.0.2.99" in text_of(screen, "#service-detail")

        lost(runtime, a)
        await wait_for(lambda: screen.table.row_count == 4, description="a row gone")
        assert screen.table.selected_key == b.key and screen.table.cursor_row == 2
        assert text_of(screen, "#discovery-count").startswith("4 services · 0 mapped")


async def test_the_filter_matches_name_type_address_and_host(runtime: Runtime) -> None:
    found(
        runtime,
        service("Living room TV", "_googlecast._tcp.local.", addresses=("192.0.2.40",), host="tv.local."),
        service("NAS", "_https._tcp.local.", addresses=("192.0.2.50",), port=5001, host="diskstation.local."),
        service("Printer", "_ipp._tcp.local.", addresses=("192.0.2.60",), port=631, host="brother.local."),
    )
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_discovery(app, pilot)
        assert len(names(screen)) == 3
        await pilot.press("slash")
        field = app.focused
        assert isinstance(field, Input)
        for query, expected in (
            ("nas", ["NAS"]),  # name
            ("chromecast", ["Living room TV"]),  # type label
            ("_ipp", ["Printer"]),  # type
            ("192.0.2.5", ["NAS"]),  # address
            ("brother", ["Printer"]),  # host
            ("nothing-like-it", []),
        ):
            field.value = query

            def shown(expected: list[str] = expected) -> bool:
                return names(screen) == expected

            await wait_for(shown, description=f"the rows for {query}")
        assert "3 services · 0 mapped · 0 match the filter" in text_of(screen, "#discovery-count")
        assert 'No service matches "nothing-like-it"' in text_of(screen, "#discovery-empty")
        await pilot.press("escape")
        await wait_for(lambda: len(names(screen)) == 3, description="every row again")
        assert screen.table.has_focus


async def test_an_unresolved_service_cannot_be_added_and_says_why(runtime: Runtime) -> None:
    found(runtime, service("Shy printer", addresses=(), port=0, host=""))
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_discovery(app, pilot)
        assert str(screen.table.get_row_at(0)[2]) == "resolving…"
        assert "1 resolving" in text_of(screen, "#discovery-count")
        await pilot.press("enter")
        await pilot.press("a")
        await wait_for(lambda: any("has not told its address" in t for t in toasts(app)), description="why not")
        assert isinstance(app.screen, DiscoveryScreen)
        assert [t for t in toasts(app) if "Shy printer has not told its address and port yet" in t]


async def test_an_https_device_is_added_with_certificate_checks_off(runtime: Runtime) -> None:
    nas = service("Disk Station", "_https._tcp.local.", addresses=("127.0.0.1",), port=5001, path="/dsm")
    found(runtime, nas)
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_discovery(app, pilot)
        await pilot.press("a")
        await wait_for(lambda: isinstance(app.screen, SiteEditorModal), description="the site editor")
        editor = app.screen
        assert isinstance(editor, SiteEditorModal)
        note = str(editor.query_one("#editor-note", Static).render())
        assert "https://127.0.0.1:5001/dsm" in note and "Certificate checks are off" in note
        assert "site-editor" in " ".join(app.unsaved)  # a filled-in form is unsaved work
        await pilot.press("ctrl+s")
        await wait_for(lambda: runtime.store.config.site("disk-station") is not None, description="saved")
        site = runtime.store.config.site("disk-station")
        assert site is not None
        assert site.upstream_urls == ("mdns://Disk Station._https._tcp/dsm",)
        assert site.hosts == ("disk-station.local", "disk-station.home.arpa")
        assert site.verify_upstream is False
        assert "verify_upstream = false" in runtime.config_path.read_text(encoding="utf-8")
        assert parse_config(runtime.config_path.read_text(encoding="utf-8")).site("disk-station") == site
        await wait_for(lambda: isinstance(app.screen, DiscoveryScreen), description="back on Discovery")
        assert str(screen.table.get_row(nas.key)[4]) == "disk-station"


def test_a_suggested_site_gets_a_free_name_and_free_hosts(runtime: Runtime) -> None:
    config = runtime.store.config
    taken = replace(config.sites[0], name="plex", hosts=("plex.local",))
    other = replace(config.sites[0], name="x", hosts=("plex-2.home.arpa",))
    config = replace(config, sites=(taken, other))
    site = suggest_site(service("Plex", "_plexmediasvr._tcp.local.", path="/web"), config)
    assert site.name == "plex-3"  # plex is taken; plex-2's host is
    assert site.hosts == ("plex-3.local", "plex-3.home.arpa")
    assert site.upstream_urls == ("mdns://Plex._plexmediasvr._tcp/web",)
    assert site.verify_upstream is True
    assert site.compression.enabled == config.defaults.compression


async def test_a_site_pointing_at_a_service_is_shown_against_it(runtime: Runtime) -> None:
    plex = service("Plex", "_plexmediasvr._tcp.local.", addresses=("192.0.2.20",), port=32400)
    other = service("Kodi", addresses=("192.0.2.21",), port=8080)
    found(runtime, plex, other)
    await asyncio.to_thread(
        runtime.store.add_site,
        replace(
            runtime.store.config.sites[0], name="plex", hosts=("plex.home.arpa",), upstreams=(Upstream(str(plex.ref)),)
        ),
    )
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_discovery(app, pilot)
        assert str(screen.table.get_row(plex.key)[4]) == "plex"
        assert str(screen.table.get_row(other.key)[4]) == "—"
        assert text_of(screen, "#discovery-count").startswith("2 services · 1 mapped")
        # A site by URL maps too, and the column follows config changes.
        url = other.url()
        assert url is not None
        await asyncio.to_thread(
            runtime.store.add_site,
            replace(runtime.store.config.sites[0], name="kodi", hosts=("kodi.home.arpa",), upstreams=(Upstream(url),)),
        )
        await wait_for(lambda: str(screen.table.get_row(other.key)[4]) == "kodi", description="the new mapping")
        await pilot.pause()


async def test_names_announced_and_in_conflict_are_toasted_literally(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_discovery(app, pilot)
        runtime.bus.publish(NameConflict("plex.local", ("192.168.1.9",)))
        runtime.bus.publish(NameAnnounced("nas.local", ("192.168.1.5",)))
        runtime.bus.publish(NameConflict("[red]x[/].local", ()))
        await wait_for(lambda: len(app._notifications) == 3, description="three toasts")
        runtime.bus.publish(NameAnnounced("a.local", ("192.168.1.5",)))
        runtime.bus.publish(NameAnnounced("b.local", ("192.168.1.5", "fd00::5")))
        await wait_for(lambda: len(app._notifications) == 4, description="one toast for a batch")
        said = toasts(app)
        assert "plex.local is already answered by 192.168.1.9 on the LAN; homeproxy does not take it" in said
        assert "Answering nas.local on the LAN (192.168.1.5)" in said
        assert "[red]x[/].local is already answered by another machine on the LAN; homeproxy does not take it" in said
        assert "Answering a.local, b.local on the LAN (192.168.1.5, fd00::5)" in said


async def test_the_screen_catches_up_after_another_screen_showed(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_discovery(app, pilot)
        assert "mDNS discovery is off in this run" in text_of(screen, "#discovery-status")
        assert "No services found yet" in text_of(screen, "#discovery-empty")
        await pilot.press("1")
        found(runtime, service("Octo", "_octoprint._tcp.local."))
        await pilot.pause(0.3)  # the batch goes to the dashboard
        await pilot.press("5")
        await wait_for(lambda: names(screen) == ["Octo"], description="the row after coming back")
        await wait_for(lambda: screen.table.has_focus, description="the table focused once it has rows")
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, SiteEditorModal), description="the site editor")


async def test_settings_has_a_discovery_pane_that_saves(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("4")
        await wait_for(lambda: isinstance(app.screen, SettingsScreen), description="Settings")
        screen = app.screen
        screen.query_one("#settings-tabs", TabbedContent).active = "discovery"
        types = screen.query_one("#discovery-service-types", Input)
        await wait_for(lambda: types.value.startswith("_http._tcp, _https._tcp, "), description="types shown")
        await wait_for(
            lambda: "mDNS is off in this run" in str(screen.query_one("#discovery-interfaces-help", Static).render()),
            description="interfaces help",
        )

        screen.query_one("#discovery-advertise", Checkbox).toggle()
        await wait_for(lambda: runtime.store.config.discovery.advertise, description="advertise saved")
        field = screen.query_one("#discovery-interfaces", Input)
        field.focus()
        field.value = "127.0.0.1, lo"
        await pilot.press("enter")
        await wait_for(
            lambda: runtime.store.config.discovery.interfaces == ("127.0.0.1", "lo"), description="interfaces saved"
        )
        types.focus()
        types.value = "_http._tcp, _wled._tcp"
        await pilot.press("enter")
        await wait_for(
            lambda: runtime.store.config.discovery.service_types == ("_http._tcp.local.", "_wled._tcp.local."),
            description="types saved",
        )
        await wait_for(lambda: types.value == "_http._tcp, _wled._tcp", description="shown short")
        text = runtime.config_path.read_text(encoding="utf-8")
        assert "[discovery]" in text and "advertise = true" in text and "# my homelab" in text


async def test_help_has_the_discovery_screen_and_its_keys(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("question_mark")
        await wait_for(lambda: isinstance(app.screen, HelpScreen), description="Help")
        heading, text, keys = (
            plain(app.screen.query_one(f"#help-discovery{part}", Static).content)  # type: ignore[arg-type]
            for part in ("", "-text", "-keys")
        )
        assert "5" in heading and "Discovery" in heading
        assert "mDNS" in text and "mdns://" in text
        assert "Add as site" in keys and "Filter" in keys and "Clear filter" in keys


async def test_enter_adds_the_next_service_after_the_table_was_empty(runtime: Runtime) -> None:
    """A table with no rows is hidden and Textual hands the focus to the filter; when services
    come back (the filter untouched), the table takes it back so Enter adds the service."""
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_discovery(app, pilot)
        first, second = service("NAS 1"), service("NAS 2", port=81)
        found(runtime, first)
        await wait_for(lambda: names(screen) == ["NAS 1"], description="the first service")
        lost(runtime, first)
        await wait_for(lambda: names(screen) == [], description="an empty table")
        found(runtime, second)
        await wait_for(lambda: names(screen) == ["NAS 2"], description="the second service")
        await wait_for(lambda: app.focused is screen.table, description="the table focused again")

        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, SiteEditorModal), description="the editor for NAS 2")

        app.screen.dismiss(None)
        await wait_for(lambda: app.screen is screen, description="back on Discovery")
        await pilot.press("slash", *"2zz")  # someone typing a filter keeps the focus while rows come and go
        await wait_for(lambda: names(screen) == [], description="nothing matches")
        await pilot.press("backspace", "backspace")
        await wait_for(lambda: names(screen) == ["NAS 2"], description="the filter matching again")
        assert isinstance(app.focused, Input)


async def test_homeproxys_own_advert_is_dimmed_labelled_and_cannot_be_added(runtime: Runtime) -> None:
    mine = replace(service("Plex", addresses=("192.0.2.5",), port=8080, host="plex.local."), own=True)
    other = service("NAS", addresses=("192.0.2.6",), port=5000)
    found(runtime, mine, other)
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_discovery(app, pilot)
        assert names(screen) == ["NAS", "Plex"]
        row = screen.table.get_row(mine.key)
        assert str(row[4]) == "this homeproxy"
        assert all(str(cell.style) == "dim" for cell in row), [cell.style for cell in row]
        assert not any(str(cell.style) == "dim" for cell in screen.table.get_row(other.key)[:3])
        assert "2 services · 0 mapped · 1 this homeproxy" in text_of(screen, "#discovery-count")

        screen.table.move_cursor(row=names(screen).index("Plex"))
        await pilot.pause()
        assert text_of(screen, "#service-detail").startswith("this homeproxy · Plex · _http._tcp.local.")
        said = "Plex: this is homeproxy itself: adding it would loop back"
        for key in ("a", "enter"):
            await pilot.press(key)
            await wait_for(lambda: any(t.startswith(said) for t in toasts(app)), description=f"why not ({key})")
            app.clear_notifications()
        await pilot.pause()
        assert isinstance(app.screen, DiscoveryScreen)  # no site editor

        # No longer ours (homeproxy moved to another port): the row is drawn as any other, and can be added.
        found(runtime, replace(mine, own=False))
        await wait_for(lambda: str(screen.table.get_row(mine.key)[4]) == "—", description="the label gone")
        row = screen.table.get_row(mine.key)
        assert [str(cell.style) for cell in row] == ["", "", "", "dim", "dim"]  # path "/" and site "—" are dim
        assert "this homeproxy" not in text_of(screen, "#service-detail")
        await pilot.press("a")
        await wait_for(lambda: isinstance(app.screen, SiteEditorModal), description="the site editor")
