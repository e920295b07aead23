"""The site editor's upstream side: a row per upstream (keys and buttons), balance, health checks,
route rewrites; driven through Pilot against a real engine and real backends."""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from textual.widgets import Select

from homeproxy.config.model import HealthCheck, Upstream
from homeproxy.runtime import Runtime
from homeproxy.tui.app import HomeproxyApp
from homeproxy.tui.widgets.upstream_list import UpstreamList, upstream_value
from tests.conftest import serving
from tests.tui.test_sites import fetch, open_editor, save_and_wait, sites_screen, type_into
from tests.waiting import wait_for


@pytest.fixture
async def other() -> AsyncIterator[int]:
    """A second real backend, which says who it is."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello from the other backend {request.path}")

    async with serving(hello) as port:
        yield port


def site_table(runtime: Runtime, name: str = "files") -> dict[str, Any]:
    """The site's table as the config file now has it."""
    data = tomllib.loads(runtime.config_path.read_text())
    return next(s for s in data["sites"] if s["name"] == name)


def urls(ups: UpstreamList) -> list[str]:
    return [row.url.value for row in ups.rows]


def test_an_upstream_is_a_plain_url_until_it_has_options() -> None:
    assert upstream_value("http://a") == "http://a"
    assert upstream_value("http://a", " 1 ", False, "0") == "http://a"  # the defaults, typed out
    assert upstream_value("http://a", "3", True, "20") == {
        "url": "http://a",
        "weight": 3,
        "backup": True,
        "max_conns": 20,
    }
    assert upstream_value("http://a", "", False, "5") == {"url": "http://a", "max_conns": 5}
    assert upstream_value("http://a", "lots") == {"url": "http://a", "weight": "lots"}  # for the loader's message


async def test_rows_are_added_moved_and_removed_with_keys_and_saved_with_their_options(
    runtime: Runtime, backend: int, other: int
) -> None:
    mine, theirs = f"http://127.0.0.1:{backend}", f"http://127.0.0.1:{other}"
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "e")
        ups = editor.form.upstreams
        assert urls(ups) == [mine]
        ups.rows[0].url.focus()
        await pilot.press("ctrl+n")  # a new row under the one with the cursor, the cursor in it
        await wait_for(lambda: len(ups.rows) == 2, description="a second row")
        assert app.focused is ups.rows[1].url
        await type_into(pilot, ups.rows[1].url, theirs)
        await type_into(pilot, ups.rows[1].weight, "3")
        ups.rows[1].max_conns.focus()
        await pilot.press("2", "0")
        await pilot.press("alt+up")  # the whole row moves; the cursor stays in it
        await wait_for(lambda: urls(ups) == [theirs, mine], description="the new row first")
        assert app.focused is ups.rows[0].max_conns
        await pilot.press("ctrl+n")
        await wait_for(lambda: len(ups.rows) == 3, description="a third row")
        await type_into(pilot, ups.rows[1].url, "http://127.0.0.1:9")
        await pilot.press("ctrl+delete")  # and gone again; the cursor goes to the row in its place
        await wait_for(lambda: urls(ups) == [theirs, mine], description="the third row removed")
        assert app.focused is ups.rows[1].url
        ups.rows[1].backup.focus()
        await pilot.press("space")
        await wait_for(lambda: ups.rows[1].backup.value, description="a backup")
        await pilot.press("alt+down")  # already last: nothing moves
        assert urls(ups) == [theirs, mine]
        await save_and_wait(pilot, app)

    assert site_table(runtime)["upstreams"] == [
        {"url": theirs, "weight": 3, "max_conns": 20},
        {"url": mine, "backup": True},
    ]
    site = runtime.store.config.site("files")
    assert site is not None
    assert site.upstreams == (Upstream(theirs, weight=3, max_conns=20), Upstream(mine, backup=True))
    status, _, body = await fetch(runtime, "files.home.arpa", "/x")  # the primary answers, the backup waits
    assert (status, body) == (200, b"hello from the other backend /x")


async def test_the_buttons_beside_each_row_do_what_the_keys_do(runtime: Runtime, other: int) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "e")
        ups = editor.form.upstreams
        mine = urls(ups)[0]
        await pilot.click(ups.query_one(".add-row"))
        await wait_for(lambda: len(ups.rows) == 2, description="a row from the + button")
        await type_into(pilot, ups.rows[1].url, f"http://127.0.0.1:{other}")
        await pilot.click(ups.rows[1].up_button)
        await wait_for(lambda: urls(ups)[0] == f"http://127.0.0.1:{other}", description="moved up by its ↑")
        await pilot.click(ups.rows[0].down_button)
        await wait_for(lambda: urls(ups)[1] == f"http://127.0.0.1:{other}", description="moved down by its ↓")
        assert not ups.rows[0].up_button.focusable  # the keyboard has keys: Tab does not stop on them
        await pilot.click(ups.rows[0].remove_button)
        await wait_for(lambda: urls(ups) == [f"http://127.0.0.1:{other}"], description="removed by its ✕")
        assert mine not in urls(ups)
        await save_and_wait(pilot, app)

    assert site_table(runtime)["upstreams"] == [f"http://127.0.0.1:{other}"]
    status, _, body = await fetch(runtime, "files.home.arpa", "/b")
    assert (status, body) == (200, b"hello from the other backend /b")


async def test_several_urls_in_one_row_count_and_split_into_rows(runtime: Runtime, backend: int, other: int) -> None:
    mine, theirs = f"http://127.0.0.1:{backend}", f"http://127.0.0.1:{other}"
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "e")
        ups = editor.form.upstreams
        # As the one input of old took them: pasted, with commas, an mDNS name with spaces.
        await type_into(pilot, ups.rows[0].url, f"{mine}, mdns://Living Room._http._tcp {theirs}")
        await wait_for(lambda: editor.candidate is not None, description="a valid site")
        assert editor.candidate is not None
        assert editor.candidate.upstream_urls == (mine, "mdns://Living Room._http._tcp", theirs)
        await pilot.press("enter")
        await wait_for(lambda: len(ups.rows) == 3, description="a row each")
        assert urls(ups) == [mine, "mdns://Living Room._http._tcp", theirs]


async def test_a_bad_upstream_is_marked_on_its_row_and_focused_on_save(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "e")
        ups = editor.form.upstreams
        ups.rows[0].url.focus()
        await pilot.press("ctrl+n")
        await wait_for(lambda: len(ups.rows) == 2, description="a second row")
        await type_into(pilot, ups.rows[1].url, "ftp://nas")
        await type_into(pilot, ups.rows[1].weight, "0")
        await wait_for(lambda: "item 2" in editor.form.fields["upstreams"].error_line.messages, description="error")
        assert "ftp://nas" in editor.form.fields["upstreams"].error_line.messages
        assert ups.rows[1].has_class("-invalid") and not ups.rows[0].has_class("-invalid")
        editor.form.inputs["name"].focus()
        await pilot.press("ctrl+s")
        await wait_for(lambda: app.focused is ups.rows[1].url, description="the bad row focused")
        await type_into(pilot, ups.rows[1].url, "http://127.0.0.1:9")
        await wait_for(
            lambda: "from 1 to 1000" in editor.form.fields["upstreams"].error_line.messages,
            description="the weight's turn",
        )
        await type_into(pilot, ups.rows[1].weight, "2")
        await wait_for(lambda: editor.form.error_text() == "", description="no errors")
        assert not ups.rows[1].has_class("-invalid")


async def test_balance_and_health_checks_are_saved_and_explained(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "e")
        form = editor.form
        assert form.query_one("#balance", Select).value == "round_robin"
        assert not form.query_one("#health-options").display  # off: its options hidden
        form.query_one("#balance", Select).value = "least_conn"
        form.checks["health"].focus()
        await pilot.press("space")
        await wait_for(lambda: form.query_one("#health-options").display, description="the health options")
        await type_into(pilot, form.inputs["health.path"], "/healthz")
        await type_into(pilot, form.inputs["health.interval"], "soon")
        await wait_for(lambda: "duration" in form.fields["health.interval"].error_line.messages, description="error")
        assert form.fields["health.interval"].error_line.messages.startswith("expected")  # under its own field
        await type_into(pilot, form.inputs["health.interval"], "2s")
        await type_into(pilot, form.inputs["health.status"], "204")
        await type_into(pilot, form.inputs["health.fails"], "5")
        await wait_for(lambda: editor.candidate is not None, description="a valid site")
        await save_and_wait(pilot, app)

    site = runtime.store.config.site("files")
    assert site is not None and site.balance == "least_conn"
    assert site.health == HealthCheck(path="/healthz", interval=2.0, status=(204, 204), fails=5)
    table = site_table(runtime)
    assert table["balance"] == "least_conn"
    assert table["health"] == {"path": "/healthz", "interval": "2s", "status": 204, "fails": 5}


async def test_health_checks_off_again_and_a_route_rewrite(runtime: Runtime, backend: int) -> None:
    runtime.config_path.write_text(
        runtime.config_path.read_text() + 'health = { path = "/", body = "hello" }\n'
        f'[[sites.routes]]\npath = "/v1/"\nupstreams = [{{ url = "http://127.0.0.1:{backend}", max_conns = 9 }}]\n'
    )
    assert runtime.store.reload()
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "e")
        form = editor.form
        assert form.inputs["health.body"].value == "hello"
        assert editor.validate() and not editor.dirty  # the route's table upstream reads back as it is
        form.checks["health"].focus()
        await pilot.press("space")
        await wait_for(lambda: not form.query_one("#health-options").display, description="health off")
        row = form.routes.rows[0]
        await type_into(pilot, row.rewrite, "/api/")
        await wait_for(lambda: editor.candidate is not None, description="a valid site")
        await save_and_wait(pilot, app)

    site = runtime.store.config.site("files")
    assert site is not None and site.health is None
    assert site.routes[0].rewrite == "/api/" and site.routes[0].upstreams[0].max_conns == 9
    assert "health" not in site_table(runtime)
    status, _, body = await fetch(runtime, "files.home.arpa", "/v1/users")
    assert (status, body) == (200, b"hello from backend /api/users")


# --- passive health, retries, header timeout ----------------------------------------------

NEW_KEYS = ("passive_health", "retries", "retry_idempotent", "retry_deadline", "header_timeout")


async def test_passive_health_retries_and_header_timeout_are_saved_as_typed(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "e")
        form = editor.form
        assert form.checks["passive_health"].value  # on by default, its options shown
        assert form.query_one("#passive-health-options").display
        assert (form.inputs["retries"].value, form.inputs["retry_deadline"].value) == ("2", "15s")
        assert form.inputs["header_timeout"].value == ""  # unset: as long as read_timeout
        await type_into(pilot, form.inputs["passive_health.fails"], "5")
        await type_into(pilot, form.inputs["passive_health.window"], "45s")
        form.checks["passive_health.status_5xx"].focus()
        await pilot.press("space")
        await type_into(pilot, form.inputs["retries"], "4")
        await type_into(pilot, form.inputs["retry_deadline"], "20s")
        form.checks["retry_idempotent"].focus()
        await pilot.press("space")
        await type_into(pilot, form.inputs["header_timeout"], "10s")
        await wait_for(lambda: editor.candidate is not None and editor.dirty, description="a valid, changed site")
        await save_and_wait(pilot, app)

    site = runtime.store.config.site("files")
    assert site is not None
    assert (site.passive_health.fails, site.passive_health.window, site.passive_health.status_5xx) == (5, 45.0, True)
    assert (site.retries, site.retry_deadline, site.retry_idempotent, site.header_timeout) == (4, 20.0, True, 10.0)
    table = site_table(runtime)
    assert table["passive_health"] == {"fails": 5, "window": "45s", "status_5xx": True}  # cooldown: the default
    assert (table["retries"], table["retry_deadline"], table["retry_idempotent"]) == (4, "20s", True)
    assert table["header_timeout"] == "10s"
    text = runtime.config_path.read_text()
    assert "# my homelab" in text and "# the file server in the closet" in text


async def test_defaults_are_not_written_and_off_or_blank_is_saved(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "e")
        form = editor.form
        await type_into(pilot, form.inputs["retries"], "3")
        await type_into(pilot, form.inputs["retries"], "2")  # typed back to the default
        form.checks["passive_health"].focus()
        await pilot.press("space", "space")  # off and on again
        await wait_for(lambda: form.query_one("#passive-health-options").display, description="options shown")
        form.checks["websockets"].focus()
        await pilot.press("space")
        await wait_for(lambda: editor.candidate is not None and editor.dirty, description="a valid, changed site")
        await save_and_wait(pilot, app)
        assert not set(NEW_KEYS) & set(site_table(runtime))  # at their defaults: not written

        editor = await open_editor(pilot, "e")
        form = editor.form
        form.checks["passive_health"].focus()
        await pilot.press("space")
        await wait_for(lambda: not form.query_one("#passive-health-options").display, description="options hidden")
        await save_and_wait(pilot, app)
    assert site_table(runtime)["passive_health"] is False
    site = runtime.store.config.site("files")
    assert site is not None and not site.passive_health.enabled
    assert "# the file server in the closet" in runtime.config_path.read_text()


async def test_bad_values_show_the_loaders_errors_under_their_fields_and_save_nothing(runtime: Runtime) -> None:
    before = runtime.config_path.read_bytes()
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "e")
        form = editor.form

        def under(key: str) -> str:
            return form.fields[key].error_line.messages

        await type_into(pilot, form.inputs["retries"], "-1")
        await wait_for(lambda: "whole number >= 0, got -1" in under("retries"), description="the retries error")
        await type_into(pilot, form.inputs["passive_health.fails"], "0")
        await wait_for(lambda: "from 1 to 1000, got 0" in under("passive_health.fails"), description="fails error")
        assert under("passive_health.fails").startswith("expected")  # under its own field, without the key
        await type_into(pilot, form.inputs["retry_deadline"], "soon")
        await wait_for(lambda: '"soon"' in under("retry_deadline"), description="the deadline error")
        await type_into(pilot, form.inputs["header_timeout"], "never")
        await wait_for(lambda: "expected a duration" in under("header_timeout"), description="the header timeout")
        await pilot.press("ctrl+s")
        await wait_for(lambda: "Not saved" in " ".join(n.title for n in app._notifications), description="refused")
        assert app.screen is editor and editor.candidate is None
        assert runtime.config_path.read_bytes() == before


async def test_a_file_with_these_keys_reads_back_unchanged(runtime: Runtime) -> None:
    runtime.config_path.write_text(
        runtime.config_path.read_text()
        + 'passive_health = { fails = 5, window = "45s", cooldown = "2m", status_5xx = true }\n'
        'retries = 0\nretry_idempotent = true\nretry_deadline = "20s"\nheader_timeout = "1500ms"\n'
    )
    assert runtime.store.reload()
    original = runtime.store.config.site("files")
    assert original is not None
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "e")
        form = editor.form
        assert [form.inputs[k].value for k in ("passive_health.fails", "passive_health.window")] == ["5", "45s"]
        assert form.inputs["passive_health.cooldown"].value == "2m"
        assert form.checks["passive_health.status_5xx"].value and form.checks["retry_idempotent"].value
        assert [form.inputs[k].value for k in ("retries", "retry_deadline", "header_timeout")] == ["0", "20s", "1.5s"]
        assert editor.validate() and editor.candidate == original and not editor.dirty
        await type_into(pilot, form.inputs["header_timeout"], "")  # blank: back to read_timeout, the key goes
        await wait_for(lambda: editor.candidate is not None and editor.dirty, description="a valid, changed site")
        await save_and_wait(pilot, app)
    table = site_table(runtime)
    assert "header_timeout" not in table
    assert table["passive_health"] == {"fails": 5, "window": "45s", "cooldown": "2m", "status_5xx": True}
    assert (table["retries"], table["retry_deadline"]) == (0, "20s")


async def test_passive_health_off_keeps_the_files_options(runtime: Runtime) -> None:
    runtime.config_path.write_text(
        runtime.config_path.read_text() + "passive_health = { enabled = false, fails = 7 }\n"
    )
    assert runtime.store.reload()
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await sites_screen(pilot)
        editor = await open_editor(pilot, "e")
        form = editor.form
        assert not form.checks["passive_health"].value
        assert not form.query_one("#passive-health-options").display
        assert form.inputs["passive_health.fails"].value == "7"  # kept for when it is turned on
        await type_into(pilot, form.inputs["retries"], "1")
        await wait_for(lambda: editor.candidate is not None and editor.dirty, description="a valid, changed site")
        await save_and_wait(pilot, app)
    table = site_table(runtime)
    assert table["passive_health"] == {"enabled": False, "fails": 7} and table["retries"] == 1
