"""`homeproxy` with a broken config opens the file with its errors (issue 14), through Pilot."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Static, TextArea

from homeproxy.tui.repair import RepairApp, check
from tests.waiting import wait_for

GOOD_START = '[server]\nhttp_port = 0\n\n[[sites]]\nname = "a"\nhosts = ["a.lan"]\nupstreams = ["http://10.0.0.1"]\n'
BROKEN = GOOD_START + 'balance = "fastest"\n'


def broken_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(BROKEN, encoding="utf-8")
    return path


async def test_the_errors_are_shown_over_the_file_at_their_line_and_a_fix_there_starts_homeproxy(
    tmp_path: Path,
) -> None:
    path = broken_file(tmp_path)
    app = RepairApp(path, check(path))
    async with app.run_test(size=(100, 30)) as pilot:
        shown = str(app.query_one("#errors", Static).render())
        assert f"1 problem in {path}:" in shown
        assert "line 8: sites[0].balance: expected one of" in shown
        area = app.query_one("#file", TextArea)
        assert area.cursor_location == (7, 0) and area.has_focus
        await pilot.press("end", *["backspace"] * len('fastest"'), *'first"', "ctrl+s")
        await wait_for(lambda: app.return_value is True, description="the app to finish")
    assert path.read_text(encoding="utf-8") == GOOD_START + 'balance = "first"\n'
    assert check(path) == ()


async def test_a_save_that_is_still_broken_writes_nothing_and_says_why(tmp_path: Path) -> None:
    path = broken_file(tmp_path)
    app = RepairApp(path, check(path))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("end", *"x", "ctrl+s")
        await pilot.pause()
        assert app.return_value is None
        assert [str(n.message) for n in app._notifications] == [
            "Not saved: the file still has problems (listed above)."
        ]
        assert "line 8: malformed TOML" in str(app.query_one("#errors", Static).render())  # the new error
        await pilot.press("ctrl+q")
    assert path.read_text(encoding="utf-8") == BROKEN  # quitting leaves the file as it was
    assert app.return_value is not True


async def test_a_fix_made_in_another_editor_is_picked_up(tmp_path: Path) -> None:
    path = broken_file(tmp_path)
    app = RepairApp(path, check(path))
    async with app.run_test(size=(100, 30)):
        path.write_text(GOOD_START, encoding="utf-8")
        await wait_for(lambda: app.return_value is True, timeout=5, description="the outside fix to be seen")
