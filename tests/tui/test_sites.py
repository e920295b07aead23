"""The Sites screen and the site editor, driven through Pilot against a real engine and backend."""

from __future__ import annotations

import gzip
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from rich.text import Text
from textual import events
from textual.content import Content
from textual.pilot import Pilot
from textual.widgets import Checkbox, DataTable, Input, Select

from homeproxy import passwords
from homeproxy.passwords import verify_password
from homeproxy.runtime import Runtime
from homeproxy.tui.app import HomeproxyApp
from homeproxy.tui.screens.confirm import ConfirmModal
from homeproxy.tui.screens.site_editor import SiteEditorModal, check_site
from homeproxy.tui.screens.sites import SitesScreen
from homeproxy.tui.widgets import user_list
from homeproxy.tui.widgets.site_form import SiteForm
from homeproxy.tui.widgets.site_form_rows import ErrorLine, RouteRow
from homeproxy.tui.widgets.user_list import UserList
from tests.conftest import serving
from tests.waiting import wait_for

BIG = "homeproxy compresses text " * 200


@pytest.fixture
async def backend() -> AsyncIterator[int]:
    """The conftest backend, plus `/big` (large enough to be compressed) and `/cached*` (cacheable for 5 minutes)."""

    async def handle(request: web.Request) -> web.Response:
        if request.path == "/big":
            return web.Response(text=BIG, content_type="text/plain")
        if request.path.startswith("/cached"):
            return web.Response(text=f"cacheable {request.path}", headers={"Cache-Control": "max-age=300"})
        return web.Response(text=f"hello from backend {request.path}")

    async with serving(handle) as port:
        yield port


# --- helpers ---------------------------------------------------------------------------


def proxy(runtime: Runtime) -> str:
    assert runtime.engine is not None
    return f"http://127.0.0.1:{runtime.engine.addresses[0][1]}"


async def fetch(
    runtime: Runtime, host: str, path: str = "/", *, auth: tuple[str, str] | None = None, gzip_ok: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """One real request through the proxy: status, headers, the body as it came (not decoded)."""
    headers = {"Host": host, "Accept-Encoding": "gzip" if gzip_ok else "identity"}
    if auth is not None:
        headers["Authorization"] = aiohttp.encode_basic_auth(*auth)
    async with (
        aiohttp.ClientSession(auto_decompress=False) as http,
        http.get(proxy(runtime) + path, headers=headers) as r,
    ):
        return r.status, dict(r.headers), await r.read()


async def sites_screen(pilot: Pilot[None]) -> SitesScreen:
    await pilot.press("2")
    await wait_for(lambda: isinstance(pilot.app.screen, SitesScreen), description="the Sites screen")
    screen = pilot.app.screen
    assert isinstance(screen, SitesScreen)
    return screen


async def open_editor(pilot: Pilot[None], key: str) -> SiteEditorModal:
    await pilot.press(key)
    await wait_for(lambda: isinstance(pilot.app.screen, SiteEditorModal), description="the site editor")
    editor = pilot.app.screen
    assert isinstance(editor, SiteEditorModal)
    await pilot.pause()
    return editor


async def type_into(pilot: Pilot[None], widget: Input, text: str) -> None:
    """Replace what `widget` holds: short text typed key by key, longer text pasted (Pilot types slowly)."""
    widget.focus()
    await pilot.pause()
    await pilot.press("ctrl+a", "ctrl+k")
    if len(text) <= 8:
        await pilot.press(*text)
    else:
        widget.post_message(events.Paste(text))
    await wait_for(lambda: widget.value == text, description=f"{text!r} in the input")
    await pilot.pause()


def field(editor: SiteEditorModal, key: str) -> Input:
    """The input of `key`; for "upstreams", the first upstream's URL (a row each since issue 13)."""
    if key == "upstreams":
        return editor.form.upstreams.rows[0].url
    return editor.form.inputs[key]


def error_under(editor: SiteEditorModal, key: str) -> str:
    return editor.form.fields[key].error_line.messages


def toasts(app: HomeproxyApp) -> str:
    return "\n".join(str(n.message) for n in app._notifications)


async def save_and_wait(pilot: Pilot[None], app: HomeproxyApp) -> None:
    await pilot.press("ctrl+s")
    await wait_for(lambda: isinstance(app.screen, SitesScreen), description="the editor to save and close")


# --- the "done when" flows ---------------------------------------------------------------


async def test_add_site_through_the_form(runtime: Runtime, backend: int) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "a")
        assert editor.original is None
        await type_into(pilot, field(editor, "name"), "media")
        await type_into(pilot, field(editor, "hosts"), "media.home.arpa, tv.home.arpa")
        await type_into(pilot, field(editor, "upstreams"), f"http://127.0.0.1:{backend}")
        assert "media" in " ".join(app.unsaved.values())
        await save_and_wait(pilot, app)

        assert "applied live" in toasts(app)
        assert app.unsaved == {}
        site = runtime.store.config.site("media")
        assert site is not None and site.hosts == ("media.home.arpa", "tv.home.arpa")
        table = app.screen.query_one("#sites-table", DataTable)
        assert table.row_count == 2
        assert table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value == "media"

        text = runtime.config_path.read_text()
        assert 'name = "media"' in text and f'"http://127.0.0.1:{backend}"' in text
        assert "# my homelab" in text and "# the file server in the closet" in text
        for default in ("passive_health", "retries", "retry_idempotent", "retry_deadline", "header_timeout"):
            assert default not in text  # left at their defaults: not written
        status, _, body = await fetch(runtime, "tv.home.arpa", "/hello")
        assert (status, body) == (200, b"hello from backend /hello")


async def test_turning_compression_on_in_the_editor_gzips_the_next_response(runtime: Runtime) -> None:
    status, headers, _ = await fetch(runtime, "files.home.arpa", "/big", gzip_ok=True)
    assert status == 200 and "Content-Encoding" not in headers
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "e")
        switch = editor.form.checks["compression"]
        assert not switch.value
        assert not editor.query_one("#compression-options").display
        await pilot.click("#compression")  # the mouse works in the form
        await wait_for(lambda: editor.query_one("#compression-options").display, description="compression options")
        assert switch.value
        await save_and_wait(pilot, app)

        site = runtime.store.config.site("files")
        assert site is not None and site.compression.enabled
        assert "compression = true" in runtime.config_path.read_text()
        status, headers, body = await fetch(runtime, "files.home.arpa", "/big", gzip_ok=True)
        assert status == 200 and headers.get("Content-Encoding") == "gzip"
        assert gzip.decompress(body).decode() == BIG


async def test_auth_user_added_in_the_form(runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    password = "correct horse battery"
    hashed_on: list[str] = []

    def hash_password(plain: str) -> str:
        hashed_on.append(threading.current_thread().name)
        return passwords.hash_password(plain)

    monkeypatch.setattr(user_list, "hash_password", hash_password)
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "e")
        users = editor.query_one(UserList)
        users_field = editor.form.fields["auth.users"]
        assert not users_field.display  # auth is off: no users field
        mode = editor.query_one("#auth-mode", Select)
        mode.focus()
        await pilot.press("enter", "down", "enter")  # off -> Basic auth
        await wait_for(lambda: editor.form.auth_mode == "basic", description="Basic auth chosen")
        assert users_field.display
        await pilot.press("ctrl+s")  # basic auth without users: refused by the loader
        await wait_for(lambda: "needs at least one user" in error_under(editor, "auth.users"), description="error")
        assert app.screen is editor

        await type_into(pilot, users.query_one("#new-user", Input), "alice")
        await type_into(pilot, users.query_one("#new-password", Input), password)
        await type_into(pilot, users.query_one("#new-password-again", Input), password + "!")
        await pilot.press("enter")
        assert "differ" in users.query_one("#user-problem", ErrorLine).messages
        assert users.names == []
        await type_into(pilot, users.query_one("#new-password-again", Input), password)
        await pilot.press("enter")
        await wait_for(lambda: users.names == ["alice"], description="alice added (hashed in a thread)")
        assert users.query_one("#new-password", Input).value == ""
        assert verify_password(password, users.users[0][1])
        assert hashed_on and threading.main_thread().name not in hashed_on  # scrypt ran in a worker thread
        await wait_for(lambda: error_under(editor, "auth.users") == "", description="the error to clear")
        await save_and_wait(pilot, app)

    text = runtime.config_path.read_text()
    assert "alice" in text and "scrypt$" in text
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert password.encode() not in f.read_bytes(), f"the password is in {f}"
    status, headers, _ = await fetch(runtime, "files.home.arpa", "/x")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    status, _, _ = await fetch(runtime, "files.home.arpa", "/x", auth=("alice", "wrong"))
    assert status == 401
    status, _, body = await fetch(runtime, "files.home.arpa", "/x", auth=("alice", password))
    assert (status, body) == (200, b"hello from backend /x")


# --- validation --------------------------------------------------------------------------


async def test_errors_appear_as_you_type_and_save_is_refused(runtime: Runtime, backend: int) -> None:
    before = runtime.config_path.read_bytes()
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(80, 24)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "a")
        assert editor.form.error_text() == ""  # an untouched new form is not shouted at

        await type_into(pilot, field(editor, "upstreams"), "ftp://nas")
        await wait_for(lambda: "expected an http(s) URL" in error_under(editor, "upstreams"), description="URL error")
        assert '"ftp://nas"' in error_under(editor, "upstreams")
        assert editor.form.upstreams.rows[0].has_class("-invalid")

        await type_into(pilot, field(editor, "hosts"), "FILES.home.arpa")
        await wait_for(
            lambda: 'already claimed by site "files"' in error_under(editor, "hosts"), description="host clash"
        )

        await type_into(pilot, field(editor, "name"), "x")
        assert error_under(editor, "name") == ""
        await pilot.press("backspace")
        await wait_for(lambda: "cannot be empty" in error_under(editor, "name"), description="empty name error")

        await pilot.press("ctrl+s")
        await wait_for(lambda: "Not saved" in " ".join(n.title for n in app._notifications), description="toast")
        assert app.screen is editor and editor.candidate is None
        assert runtime.config_path.read_bytes() == before
        assert len(runtime.store.config.sites) == 1

        # Fixing every field clears the errors, and then it saves.
        await type_into(pilot, field(editor, "name"), "nas")
        await type_into(pilot, field(editor, "hosts"), "nas.home.arpa")
        await type_into(pilot, field(editor, "upstreams"), f"http://127.0.0.1:{backend}")
        await wait_for(lambda: editor.form.error_text() == "", description="no errors")
        await save_and_wait(pilot, app)
        assert runtime.store.config.site("nas") is not None


async def test_errors_of_options_and_routes_show_under_their_field(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "e")
        await type_into(pilot, field(editor, "read_timeout"), "soon")
        await wait_for(lambda: "expected a duration" in error_under(editor, "read_timeout"), description="timeout")
        editor.form.checks["rate_limit"].value = False
        editor.form.checks["rate_limit"].focus()
        await pilot.press("space")
        await type_into(pilot, field(editor, "rate_limit.rate"), "lots")
        await wait_for(lambda: "expected a rate" in error_under(editor, "rate_limit.rate"), description="rate error")

        await editor.form.routes.add_row()
        row = editor.query_one(RouteRow)
        await type_into(pilot, row.path, "api")
        await wait_for(lambda: 'path starting with "/"' in row.error_line.messages, description="route error")
        await type_into(pilot, row.path, "/api/")
        await wait_for(lambda: "at least one upstream" in row.error_line.messages, description="no upstream")
        assert row.has_class("-invalid")
        assert app.screen is editor


def test_check_site_reports_the_loaders_errors_by_key() -> None:
    document = {"sites": [{"name": "a", "hosts": ["a.lan"], "upstreams": ["http://10.0.0.1"]}]}
    site, errors = check_site(
        document, None, {"name": "a", "hosts": ["a.lan"], "upstreams": ["x"], "cache": {"max_bytes": "lots"}}
    )
    assert site is None
    assert errors["name"] == ['site name "a" is already used by another site']
    assert 'already claimed by site "a"' in errors["hosts"][0]
    assert "http(s) URL" in errors["upstreams"][0]
    assert "expected a size" in errors["cache.max_bytes"][0]
    site, errors = check_site(document, "a", {"name": "b", "hosts": ["a.lan"], "upstreams": ["http://10.0.0.2/"]})
    assert errors == {} and site is not None and site.upstream_urls == ("http://10.0.0.2",)


def test_editing_a_site_keeps_the_settings_the_form_does_not_show() -> None:
    """upstream_keepalive and access_log are set in an editor, not in the form: an edit keeps them,
    while a setting the form does show (the rate limit, cleared here) follows the form."""
    document = {
        "sites": [
            {
                "name": "nas",
                "hosts": ["nas.lan"],
                "upstreams": ["http://10.0.0.1"],
                "upstream_keepalive": "1s",
                "access_log": False,
                "rate_limit": "5/s",
            }
        ]
    }
    site, errors = check_site(document, "nas", {"name": "nas", "hosts": ["nas.lan"], "upstreams": ["http://10.0.0.2"]})
    assert errors == {} and site is not None
    assert (site.upstream_urls, site.upstream_keepalive, site.access_log) == (("http://10.0.0.2",), 1.0, False)
    assert site.rate_limit is None
    # A new site (no original) takes nothing from another.
    site, errors = check_site(document, None, {"name": "new", "hosts": ["new.lan"], "upstreams": ["http://10.0.0.3"]})
    assert errors == {} and site is not None and site.access_log is True


# --- the other actions -----------------------------------------------------------------


async def test_edit_hosts_and_add_a_route(runtime: Runtime, backend: int) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        await pilot.press("enter")  # enter on the table edits too
        await wait_for(lambda: isinstance(app.screen, SiteEditorModal), description="the editor")
        editor = app.screen
        assert isinstance(editor, SiteEditorModal)
        await pilot.pause()
        await type_into(pilot, field(editor, "hosts"), "files.home.arpa nas.home.arpa")
        await pilot.click("#routes .add-row")
        await wait_for(lambda: len(editor.form.routes.rows) == 1, description="a route row")
        row = editor.form.routes.rows[0]
        await type_into(pilot, row.path, "/api/")
        await type_into(pilot, row.upstreams, f"http://127.0.0.1:{backend}")
        row.strip.focus()
        await pilot.press("space")
        await save_and_wait(pilot, app)

    text = runtime.config_path.read_text()
    assert "nas.home.arpa" in text and "[[sites.routes]]" in text and "# the file server in the closet" in text
    status, _, body = await fetch(runtime, "nas.home.arpa", "/api/users")
    assert (status, body) == (200, b"hello from backend /users")


async def test_duplicate_shows_the_host_clash_then_saves_a_copy(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "d")
        assert field(editor, "name").value == "files-copy"
        assert Content.from_markup(str(editor.query_one("#editor").border_title)).plain == "New site, a copy of files"
        await wait_for(lambda: "already claimed" in error_under(editor, "hosts"), description="the clash, at once")
        await type_into(pilot, field(editor, "hosts"), "copy.home.arpa")
        await pilot.click("#save")
        await wait_for(lambda: isinstance(app.screen, SitesScreen), description="saved by the Save button")

    assert [s.name for s in runtime.store.config.sites] == ["files", "files-copy"]
    status, _, body = await fetch(runtime, "copy.home.arpa", "/c")
    assert (status, body) == (200, b"hello from backend /c")


async def test_space_disables_and_enables(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await sites_screen(pilot)
        table = screen.query_one("#sites-table", DataTable)
        await pilot.press("space")
        await wait_for(lambda: not runtime.store.config.sites[0].enabled, description="disabled")
        await wait_for(lambda: "○ off" in str(table.get_cell("files", "state")), description="the table to say off")
        assert "404 page" in toasts(app)
        assert "enabled = false" in runtime.config_path.read_text()
        status, _, _ = await fetch(runtime, "files.home.arpa")
        assert status == 404

        await pilot.click("#toggle-site")  # the mouse works too
        await wait_for(lambda: runtime.store.config.sites[0].enabled, description="enabled again")
        status, _, _ = await fetch(runtime, "files.home.arpa")
        assert status == 200


async def test_m_puts_a_site_in_maintenance_and_back(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await sites_screen(pilot)
        table = screen.query_one("#sites-table", DataTable)
        await pilot.press("m")
        await wait_for(lambda: runtime.store.config.sites[0].maintenance, description="in maintenance")
        await wait_for(lambda: "maint" in str(table.get_cell("files", "state")), description="the table to say so")
        assert "maintenance = true" in runtime.config_path.read_text()
        status, headers, body = await fetch(runtime, "files.home.arpa")
        assert (status, headers["Retry-After"]) == (503, "300") and b"maintenance" in body

        await pilot.press("m")
        await wait_for(lambda: not runtime.store.config.sites[0].maintenance, description="back")
        status, _, _ = await fetch(runtime, "files.home.arpa")
        assert status == 200


async def test_delete_asks_and_cancel_keeps_the_site(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        await pilot.press("x")
        await wait_for(lambda: isinstance(app.screen, ConfirmModal), description="the question")
        assert "files" in str(app.screen.query_one("#question").render())
        await pilot.press("n")
        await wait_for(lambda: isinstance(app.screen, SitesScreen), description="back on Sites")
        assert runtime.store.config.site("files") is not None
        status, _, _ = await fetch(runtime, "files.home.arpa")
        assert status == 200

        await pilot.press("delete")
        await wait_for(lambda: isinstance(app.screen, ConfirmModal), description="the question")
        await pilot.press("y")
        await wait_for(lambda: not runtime.store.config.sites, description="the site deleted")
        await wait_for(lambda: app.screen.has_class("-no-sites"), description="the empty state")

    text = runtime.config_path.read_text()
    assert 'name = "files"' not in text and "# my homelab" in text
    status, _, _ = await fetch(runtime, "files.home.arpa")
    assert status == 404


async def test_new_site_starts_from_the_defaults(runtime: Runtime) -> None:
    runtime.store.set_option("defaults", "compression", True)
    runtime.store.set_option("defaults", "websockets", False)
    runtime.store.set_option("defaults", "connect_timeout", "2s")
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "a")
        form = editor.form
        assert form.checks["compression"].value and not form.checks["websockets"].value
        assert not form.checks["cache"].value
        assert field(editor, "connect_timeout").value == "2s"


async def test_purge_empties_the_sites_cache(runtime: Runtime) -> None:
    runtime.store.set_site_option("files", "cache", True)
    for path, want in (("/cached/a", "MISS"), ("/cached/a", "HIT"), ("/cached/b", "MISS")):
        status, headers, _ = await fetch(runtime, "files.home.arpa", path)
        assert (status, headers.get("X-Cache")) == (200, want), path
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await sites_screen(pilot)
        assert not screen.query_one("#purge-site").disabled
        await pilot.press("p")
        await wait_for(lambda: isinstance(app.screen, ConfirmModal), description="the question")
        assert '"files"' in str(app.screen.query_one("#question").render())
        await pilot.press("n")  # kept
        await wait_for(lambda: app.screen is screen, description="back on Sites")
        _, headers, _ = await fetch(runtime, "files.home.arpa", "/cached/a")
        assert headers.get("X-Cache") == "HIT"

        await pilot.press("p")
        await wait_for(lambda: isinstance(app.screen, ConfirmModal), description="the question")
        await pilot.press("y")
        await wait_for(lambda: 'Purged 2 cached responses of "files"' in toasts(app), description="the count")
    _, headers, _ = await fetch(runtime, "files.home.arpa", "/cached/a")
    assert headers.get("X-Cache") == "MISS"
    assert "cache = true" in runtime.config_path.read_text()  # an operation: the config is as it was


async def test_purge_says_why_not_when_the_cache_is_off(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await sites_screen(pilot)
        assert screen.query_one("#purge-site").disabled
        await pilot.press("p")
        await wait_for(lambda: "The cache is off" in toasts(app), description="the reason")
        assert app.screen is screen


# --- upstream TLS, mDNS ------------------------------------------------------------------


async def test_verify_upstream_off_is_saved_and_hinted_for_tls_upstreams(runtime: Runtime, backend: int) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "e")
        hint = editor.query_one("#verify-upstream-hint")
        switch = editor.form.checks["verify_upstream"]
        assert switch.value and not hint.has_class("-visible")
        switch.focus()
        await pilot.press("space")
        await wait_for(lambda: not switch.value, description="verification off")
        assert not hint.has_class("-visible")  # a plain-http upstream: nothing to verify anyway
        await type_into(pilot, field(editor, "upstreams"), f"https://127.0.0.1:{backend}")
        await wait_for(lambda: hint.has_class("-visible"), description="the hint, for an https upstream")
        assert "self-signed" in str(hint.render())
        await type_into(pilot, field(editor, "upstreams"), "mdns://Living Room._http._tcp/web")
        assert hint.has_class("-visible")  # an mdns:// service may well be https
        await type_into(pilot, field(editor, "upstreams"), f"http://127.0.0.1:{backend}")
        await wait_for(lambda: not hint.has_class("-visible"), description="no hint for http")
        await save_and_wait(pilot, app)

    site = runtime.store.config.site("files")
    assert site is not None and not site.verify_upstream
    assert "verify_upstream = false" in runtime.config_path.read_text()
    status, _, body = await fetch(runtime, "files.home.arpa", "/still")
    assert (status, body) == (200, b"hello from backend /still")


async def test_mdns_upstream_and_publish_round_trip_literally(runtime: Runtime, backend: int) -> None:
    ref = "mdns://Living Room [red]TV._http._tcp/web"
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "e")
        assert "mdns://" in str(field(editor, "upstreams").tooltip)
        await type_into(pilot, field(editor, "upstreams"), f"{ref}, http://127.0.0.1:{backend}")
        publish = editor.query_one("#publish", Select)
        assert publish.value == "default"
        publish.focus()
        await pilot.press("enter", "down", "enter")  # default -> announce
        await wait_for(lambda: editor.form.publish_choice == "on", description="publish on")
        await wait_for(lambda: editor.candidate is not None, description="a valid site")
        assert editor.candidate is not None and editor.candidate.upstream_urls == (ref, f"http://127.0.0.1:{backend}")
        await save_and_wait(pilot, app)

        text = runtime.config_path.read_text()
        assert f'"{ref}"' in text and "publish = true" in text
        screen = app.screen
        detail = str(screen.query_one("#site-detail").render())
        assert ref in detail and f"http://127.0.0.1:{backend}" in detail
        assert "announces its .local names" in str(screen.query_one("#site-detail").render())
        editor = await open_editor(pilot, "e")  # shown as it was typed, markup and all, a row each
        assert [row.url.value for row in editor.form.upstreams.rows] == [ref, f"http://127.0.0.1:{backend}"]
        assert editor.query_one("#publish", Select).value == "on"
        assert editor.validate() and not editor.dirty


async def test_publish_back_to_default_removes_the_key(runtime: Runtime) -> None:
    runtime.store.set_site_option("files", "publish", False)
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "e")
        assert editor.query_one("#publish", Select).value == "off"
        editor.query_one("#publish", Select).value = "default"
        await wait_for(lambda: editor.form.publish_choice == "default", description="back to the default")
        await save_and_wait(pilot, app)
    site = runtime.store.config.site("files")
    assert site is not None and site.publish is None
    assert "publish" not in runtime.config_path.read_text()


def test_split_upstreams_keeps_the_spaces_of_mdns_names() -> None:
    from homeproxy.tui.widgets.site_form_rows import split_upstreams

    assert split_upstreams("http://a, mdns://My NAS._http._tcp/x http://b") == [
        "http://a",
        "mdns://My NAS._http._tcp/x",
        "http://b",
    ]
    assert split_upstreams(" mdns://A B._h._tcp,mdns://C._h._tcp ") == ["mdns://A B._h._tcp", "mdns://C._h._tcp"]
    assert split_upstreams("http://a http://b,,http://c") == ["http://a", "http://b", "http://c"]
    assert split_upstreams("") == []


# --- unsaved work ------------------------------------------------------------------------


async def test_unsaved_editor_makes_quit_and_close_ask(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(80, 24)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "e")
        assert app.unsaved == {}
        await type_into(pilot, field(editor, "upstreams"), "http://127.0.0.1:1")
        assert any("files" in v for v in app.unsaved.values())

        await pilot.press("ctrl+q")
        await wait_for(lambda: isinstance(app.screen, ConfirmModal), description="the quit question")
        assert "Unsaved" in str(app.screen.query_one("#question").render())
        await pilot.press("n")
        await wait_for(lambda: app.screen is editor, description="back in the editor")
        assert app.is_running

        await pilot.press("escape")  # closing with changes asks too
        await wait_for(lambda: isinstance(app.screen, ConfirmModal), description="the discard question")
        await pilot.press("n")
        await wait_for(lambda: app.screen is editor, description="still editing")
        assert field(editor, "upstreams").value == "http://127.0.0.1:1"

        # Typing the old value back means nothing is unsaved.
        old = runtime.store.config.sites[0].upstreams[0].url
        await type_into(pilot, field(editor, "upstreams"), old)
        assert app.unsaved == {}
        await type_into(pilot, field(editor, "upstreams"), "http://127.0.0.1:1")
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, ConfirmModal), description="the discard question")
        await pilot.press("y")
        await wait_for(lambda: isinstance(app.screen, SitesScreen), description="discarded")
        assert app.unsaved == {}
        assert runtime.store.config.sites[0].upstream_urls == (old,)

        await pilot.press("ctrl+q")  # nothing unsaved: no question
        await wait_for(lambda: not app.is_running, description="the app to exit")


async def test_markup_in_a_site_name_shows_literally(runtime: Runtime) -> None:
    from dataclasses import replace

    site = runtime.store.config.sites[0]
    runtime.store.update_site(site.name, replace(site, name="[red]x[/red] [@click=app.quit]"))
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await sites_screen(pilot)
        table = screen.query_one("#sites-table", DataTable)
        cell = table.get_cell("[red]x[/red] [@click=app.quit]", "name")
        assert isinstance(cell, Text) and cell.plain == "[red]x[/red] [@click=app.quit]"  # a str would be markup
        assert str(screen.query_one("#site-detail").render()).startswith("[red]x[/red] [@click=app.quit]  ● enabled")
        editor = await open_editor(pilot, "e")
        assert field(editor, "name").value == "[red]x[/red] [@click=app.quit]"
        title = Content.from_markup(str(editor.query_one("#editor").border_title))
        assert title.plain == "Edit site [red]x[/red] [@click=app.quit]"
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, SitesScreen), description="closed")
        await pilot.press("x")
        await wait_for(lambda: isinstance(app.screen, ConfirmModal), description="the question")
        assert "[red]x[/red] [@click=app.quit]" in str(app.screen.query_one("#question").render())
        assert app.is_running


async def test_the_form_reads_back_the_site_unchanged(runtime: Runtime) -> None:
    """Every setting round-trips: opening a rich site and saving changes nothing."""
    rich = (
        "\n[[sites]]\n"
        'name = "rich"\nhosts = ["rich.lan"]\nupstreams = ["http://127.0.0.1:9", "mdns://My NAS._http._tcp/x"]\n'
        'allow = ["10.0.0.0/8"]\ndeny = ["10.0.0.66/32"]\nrate_limit = { rate = "20/s", burst = 50 }\n'
        'connect_timeout = "1500ms"\nread_timeout = "2m"\npreserve_host = false\nwebsockets = false\n'
        'auth = { mode = "login", users = { bob = "scrypt$32768$8$1$Zf7gSnuI4aUanklZewhCtA$QlIpisEe4Tzdfao0Kj5Z'
        'QW013VRZblLE+oDgG33JNrk" }, cookie_domain = "lan", session_ttl = "12h", bypass = ["192.168.0.0/16"] }\n'
        'cache = { default_ttl = "30s", max_entry_bytes = "1MiB", cookies = true, stale_on_error = "1h" }\n'
        'compression = { min_bytes = 0, types = ["text/*"], algorithms = ["gzip"] }\n'
        "verify_upstream = false\npublish = false\n"
        'headers = { security = true, request = { set = { X-A = "1" }, remove = ["X-B"] },'
        ' response = { set = { X-C = "a, b; c" }, remove = ["Server"] } }\n'
        '[[sites.routes]]\npath = "/api/"\nupstreams = ["http://127.0.0.1:10"]\nstrip_prefix = true\n'
    )
    runtime.config_path.write_text(runtime.config_path.read_text() + rich)
    assert runtime.store.reload()
    original = runtime.store.config.site("rich")
    assert original is not None
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await sites_screen(pilot)
        screen.query_one("#sites-table", DataTable).move_cursor(row=1)
        editor = await open_editor(pilot, "e")
        form = editor.form
        assert isinstance(form, SiteForm)
        assert editor.validate() and editor.candidate == original
        assert not editor.dirty and app.unsaved == {}
        assert [n for n, _ in form.users.users] == ["bob"]
        assert form.checks["cache.cookies"].value and isinstance(form.checks["cache.cookies"], Checkbox)
        # Turning auth off removes it from the file (the store alone would write `auth = {}`).
        form.query_one("#auth-mode", Select).value = "off"
        await wait_for(lambda: editor.candidate is not None and not editor.candidate.auth.mode, description="off")
        await save_and_wait(pilot, app)
    site = runtime.store.config.site("rich")
    assert site is not None and not site.auth.mode and site.cache == original.cache
    assert "bob" not in runtime.config_path.read_text()


# --- typing fast -------------------------------------------------------------------------


def _key(key: str) -> events.Key:
    """A Key event as the terminal driver makes it (`"."` arrives as `full_stop`, with its character)."""
    names = {".": "full_stop", ":": "colon", "/": "slash"}
    return events.Key(names.get(key, key), "\t" if key == "tab" else key)


async def test_tab_right_after_typing_goes_to_the_next_field(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "a")
        await pilot.press(*"plex", "tab", *"plex.example", "tab", *"http://x")
        assert field(editor, "name").value == "plex"
        assert field(editor, "hosts").value == "plex.example"
        assert field(editor, "upstreams").value == "http://x"
        await pilot.press("shift+tab", "end", "2")  # focus selects all: "end" keeps what is there
        assert field(editor, "hosts").value == "plex.example2"


async def test_keys_in_one_burst_follow_their_tabs(runtime: Runtime) -> None:
    """Keys that arrive in one read of the terminal (a fast typist, tmux send-keys) go where
    the Tabs among them say, however long the as-you-type check takes. Pilot waits for the
    app to be idle after every key, so the burst goes to the driver directly."""
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "a")
        assert app._driver is not None
        for key in [*"media", "tab", *"media.example", "tab", *"http://127.0.0.1:9"]:
            app._driver.send_message(_key(key))
        want = {"name": "media", "hosts": "media.example", "upstreams": "http://127.0.0.1:9"}
        await wait_for(
            lambda: {k: field(editor, k).value for k in want} == want,
            timeout=5,
            description=f"{want}, each in its own field",
        )


# --- HTTPS ---------------------------------------------------------------------------------


def https_port_0(runtime: Runtime) -> None:
    """Let the engine pick the HTTPS port (a TLS site opens the HTTPS listener; 8443 may be taken)."""
    path = runtime.config_path
    path.write_text(path.read_text().replace("http_port = 0\n", "http_port = 0\nhttps_port = 0\n"))
    assert runtime.store.reload()


def write_pair(directory: Path, names: tuple[str, ...], *, key_of: tuple[str, ...] | None = None) -> tuple[Path, Path]:
    """A real leaf for `names` from a throwaway CA, as fullchain.pem + privkey.pem (0600); with `key_of`,
    the key of another leaf (a mismatched pair)."""
    from homeproxy.certs.ca import LocalCA

    ca = LocalCA.open(directory / "other-ca")
    leaf = ca.issue(names)
    cert, key = directory / f"{names[0]}.fullchain.pem", directory / f"{names[0]}.privkey.pem"
    cert.write_bytes(leaf.chain_pem)
    key.write_bytes((ca.issue(key_of) if key_of else leaf).key_pem)
    key.chmod(0o600)
    return cert, key


async def test_tls_switch_shows_the_certificate_choice_and_saves(runtime: Runtime) -> None:
    https_port_0(runtime)
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "e")
        options = editor.query_one("#tls-options")
        assert not editor.form.checks["tls"].value and not options.display
        editor.form.checks["tls"].focus()
        await pilot.press("space")
        await wait_for(lambda: options.display, description="the certificate choice")
        issuer = editor.query_one("#issuer", Select)
        assert issuer.value == "default"
        assert not editor.form.fields["cert"].display  # the files only for "my own files"
        assert editor.form.checks["redirect_to_https"].value
        await wait_for(lambda: editor.candidate is not None and editor.candidate.tls, description="a valid TLS site")
        await save_and_wait(pilot, app)
        screen = app.screen
        assert isinstance(screen, SitesScreen)
        cell = screen.query_one("#sites-table", DataTable).get_cell("files", "name")
        assert isinstance(cell, Text) and cell.plain == "files 🔒"
        assert "🔒 on · certificate from the [tls] issuer" in str(screen.query_one("#site-detail").render())
    site = runtime.store.config.site("files")
    assert site is not None and site.tls and site.issuer == "" and site.redirect_to_https
    assert "tls = true" in runtime.config_path.read_text()


async def test_own_files_are_checked_as_you_type(runtime: Runtime, tmp_path: Path) -> None:
    https_port_0(runtime)
    cert, key = write_pair(tmp_path, ("files.home.arpa",))
    _, wrong_key = write_pair(tmp_path, ("other.home.arpa",))
    narrow, narrow_key = write_pair(tmp_path, ("www.files.home.arpa",))
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "e")
        editor.form.checks["tls"].value = True
        editor.query_one("#issuer", Select).value = "files"
        await wait_for(lambda: editor.form.fields["cert"].display, description="the file fields")
        await type_into(pilot, field(editor, "cert"), str(cert))
        await type_into(pilot, field(editor, "key"), str(wrong_key))
        await wait_for(lambda: "does not belong" in error_under(editor, "key"), description="the mismatch")
        assert str(wrong_key) in error_under(editor, "key") and editor.candidate is None
        await type_into(pilot, field(editor, "key"), str(key))
        await wait_for(lambda: editor.candidate is not None, description="a valid pair")
        assert editor.form.hint_text("cert-hint") == ""

        # A pair that does not cover the site's host is allowed, with a warning that names the host.
        await type_into(pilot, field(editor, "cert"), str(narrow))
        await type_into(pilot, field(editor, "key"), str(narrow_key))
        await wait_for(lambda: "files.home.arpa" in editor.form.hint_text("cert-hint"), description="the warning")
        assert editor.candidate is not None
        await type_into(pilot, field(editor, "cert"), str(cert))
        await type_into(pilot, field(editor, "key"), str(key))
        await wait_for(lambda: editor.form.hint_text("cert-hint") == "", description="no warning")
        await save_and_wait(pilot, app)
    site = runtime.store.config.site("files")
    assert site is not None and site.uses_own_cert and (site.cert, site.key) == (str(cert), str(key))
    assert runtime.store.config.issuer_of(site) == "files"


async def test_hsts_on_internal_names_is_warned_about(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "e")
        form = editor.form
        form.checks["headers.security"].value = True
        await pilot.pause()
        assert form.hint_text("hsts-hint") == ""  # no TLS: no HSTS is sent
        form.checks["tls"].value = True
        await wait_for(lambda: "files.home.arpa" in form.hint_text("hsts-hint"), description="the HSTS warning")
        assert editor.query_one("#hsts-hint").has_class("-visible")
        await type_into(pilot, field(editor, "hosts"), "files.example.org, nas, nas.local, 192.168.1.9")
        await wait_for(lambda: "nas, nas.local)" in form.hint_text("hsts-hint"), description="the internal ones")
        assert "example.org" not in form.hint_text("hsts-hint") and "192.168" not in form.hint_text("hsts-hint")
        await type_into(pilot, field(editor, "hosts"), "files.example.org")
        await wait_for(lambda: form.hint_text("hsts-hint") == "", description="a public name: no warning")
        editor.query_one("#issuer", Select).value = "acme"
        await type_into(pilot, field(editor, "hosts"), "*.example.org, ha.home.arpa")
        await wait_for(lambda: "ha.home.arpa" in form.hint_text("issuer-hint"), description="ACME's limits")
        assert "*.example.org" in form.hint_text("issuer-hint")


async def test_a_tls_site_reads_back_unchanged(runtime: Runtime, tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path, ("own.home.arpa",))
    extra = (
        '\n[[sites]]\nname = "acme"\nhosts = ["acme.example.org"]\nupstreams = ["http://127.0.0.1:9"]\n'
        'tls = true\nissuer = "acme"\nredirect_to_https = false\n'
        '\n[[sites]]\nname = "own"\nhosts = ["own.home.arpa"]\nupstreams = ["http://127.0.0.1:9"]\n'
        f'tls = true\ncert = "{cert}"\nkey = "{key}"\n'
    )
    https_port_0(runtime)
    runtime.config_path.write_text(runtime.config_path.read_text() + extra)
    assert runtime.store.reload()
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await sites_screen(pilot)
        for row, name in ((1, "acme"), (2, "own")):
            screen.query_one("#sites-table", DataTable).move_cursor(row=row)
            editor = await open_editor(pilot, "e")
            assert editor.validate() and editor.candidate == runtime.store.config.site(name), name
            assert not editor.dirty
            await pilot.press("escape")
            await wait_for(lambda: isinstance(app.screen, SitesScreen), description="closed")
