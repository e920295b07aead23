"""The site form's small list editors: path routes, header rules and Basic/login users.

Each is a self-contained widget that keeps its rows in Python (so the form can
read them at any time) and posts `Changed` when a row comes or goes; typing in
a row's inputs bubbles up as the inputs' own `Input.Changed`. Passwords are
hashed in a worker thread and only the hash is kept: the password inputs are
cleared before hashing starts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, Label, Static

from homeproxy.config import Route
from homeproxy.passwords import hash_password


def split_list(text: str) -> list[str]:
    """`"a.lan, b.lan c.lan"` -> `["a.lan", "b.lan", "c.lan"]` (commas and/or spaces)."""
    return [part for part in re.split(r"[\s,]+", text) if part]


#: An mdns:// reference runs to a comma, to whitespace before the next URL, or to the end: the
#: instance names it holds often have spaces ("mdns://Living Room._http._tcp"). Anything else
#: is one word.
_UPSTREAM = re.compile(r"mdns://.+?(?=\s*,|\s+[A-Za-z][A-Za-z0-9+.-]*://|\s*$)|[^\s,]+")


def split_upstreams(text: str) -> list[str]:
    """Upstream URLs as `split_list` splits them, keeping an mdns:// instance name's spaces:
    `"http://a, mdns://My NAS._http._tcp http://b"` -> `["http://a", "mdns://My NAS._http._tcp", "http://b"]`."""
    return _UPSTREAM.findall(text)


def focus_first(widget: Widget) -> bool:
    """Focus `widget` or its first focusable descendant; False if there is none."""
    if widget.focusable:
        widget.focus()
        return True
    for child in widget.walk_children(Widget):
        if child.focusable:
            child.focus()
            return True
    return False


class ErrorLine(Static):
    """Messages under a field, in the error colour; hidden when there are none."""

    DEFAULT_CSS = """
    ErrorLine {
        display: none;
        height: auto;
        color: $text-error;
    }
    ErrorLine.-visible {
        display: block;
    }
    """

    _shown = ""

    def show(self, messages: Sequence[str]) -> None:
        """Show `messages` (they may quote what the user typed: shown as text, never markup)."""
        text = "\n".join(messages)
        if text != self._shown:  # every keystroke re-checks every field: touch only what changed
            self._shown = text
            self.update(Text(text))
            self.set_class(bool(text), "-visible")

    @property
    def messages(self) -> str:
        """What is shown, as plain text."""
        return self._shown


class ListRow(Vertical):
    """One row of a `RowList`: its inputs, a remove button and an error line."""

    DEFAULT_CSS = """
    ListRow {
        height: auto;
    }
    ListRow > Horizontal {
        height: auto;
    }
    ListRow .remove-row {
        min-width: 3;
        width: 3;
        margin-left: 1;
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self.remove_button = Button("✕", compact=True, classes="remove-row", tooltip="Remove this row")
        self.error_line = ErrorLine()

    def controls(self) -> ComposeResult:
        """The row's inputs."""
        yield from ()

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield from self.controls()
            yield self.remove_button
        yield self.error_line

    def show_errors(self, messages: Sequence[str]) -> None:
        self.error_line.show(messages)
        self.set_class(bool(messages), "-invalid")


RowT = TypeVar("RowT", bound=ListRow)


class RowList(Vertical, Generic[RowT]):
    """Rows of inputs with an add button; posts `Changed` when a row is added or removed."""

    DEFAULT_CSS = """
    RowList {
        height: auto;
    }
    RowList > .rows {
        height: auto;
    }
    RowList > .add-row {
        width: auto;
    }
    """

    ADD_LABEL = "+ Add"

    class Changed(Message):
        """A row was added or removed."""

        def __init__(self, row_list: RowList[Any]) -> None:
            super().__init__()
            self.row_list = row_list

        @property
        def control(self) -> RowList[Any]:
            return self.row_list

    def __init__(self, rows: Iterable[RowT], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._rows: list[RowT] = list(rows)
        self.error_line = ErrorLine()

    @property
    def rows(self) -> list[RowT]:
        """The rows, in order."""
        return list(self._rows)

    def new_row(self) -> RowT:
        """An empty row (subclasses)."""
        raise NotImplementedError

    def compose(self) -> ComposeResult:
        with Vertical(classes="rows"):
            yield from self._rows
        yield Button(self.ADD_LABEL, compact=True, classes="add-row")
        yield self.error_line

    @on(Button.Pressed, ".add-row")
    async def _add_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        await self.add_row()

    async def add_row(self) -> RowT:
        """Add an empty row at the end and focus it."""
        row = self.new_row()
        self._rows.append(row)
        await self.query_one(".rows", Vertical).mount(row)
        focus_first(row)
        self.post_message(self.Changed(self))
        return row

    @on(Button.Pressed, ".remove-row")
    def _remove_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        row = next((r for r in self._rows if r.remove_button is event.button), None)
        if row is not None:
            self.remove_row(row)

    def remove_row(self, row: RowT) -> None:
        self._rows.remove(row)
        row.remove()
        self.query_one(".add-row", Button).focus()
        self.post_message(self.Changed(self))

    def show_errors(self, by_row: Mapping[int, Sequence[str]], general: Sequence[str] = ()) -> None:
        """Errors for row `i` under that row; `general` under the list."""
        for i, row in enumerate(self._rows):
            row.show_errors(by_row.get(i, ()))
        self.error_line.show(general)


class RouteRow(ListRow):
    """A path prefix, its upstreams and whether to strip the prefix."""

    DEFAULT_CSS = """
    RouteRow .route-path {
        width: 14;
        margin-right: 1;
    }
    RouteRow .route-upstreams {
        width: 1fr;
        margin-right: 1;
    }
    """

    def __init__(self, route: Route | None = None) -> None:
        super().__init__()
        self.path = Input(
            route.path if route else "",
            placeholder="/api/",
            compact=True,
            classes="route-path",
            tooltip="Path prefix, starting with /; the longest matching prefix wins",
        )
        self.upstreams = Input(
            ", ".join(u.url for u in route.upstreams) if route else "",
            placeholder="http://192.168.1.20:8080",
            compact=True,
            classes="route-upstreams",
            tooltip="http(s) URLs for this route, or mdns://Name._type._tcp services, separated by commas",
        )
        self.strip = Checkbox(
            "strip",
            route.strip_prefix if route else False,
            compact=True,
            classes="route-strip",
            tooltip="Remove the prefix before forwarding (/api/users goes upstream as /users)",
        )

    def controls(self) -> ComposeResult:
        yield self.path
        yield self.upstreams
        yield self.strip

    def value(self) -> dict[str, Any]:
        """The route as the loader reads it."""
        return {
            "path": self.path.value.strip(),
            "upstreams": split_upstreams(self.upstreams.value),
            "strip_prefix": self.strip.value,
        }


class RouteList(RowList[RouteRow]):
    """A site's path routes."""

    ADD_LABEL = "+ Add route"

    def __init__(self, routes: Iterable[Route], *, id: str | None = None) -> None:
        super().__init__((RouteRow(r) for r in routes), id=id)

    def new_row(self) -> RouteRow:
        return RouteRow()

    def values(self) -> list[dict[str, Any]]:
        return [row.value() for row in self._rows]


class HeaderRow(ListRow):
    """A header name and the value to set."""

    DEFAULT_CSS = """
    HeaderRow .header-name {
        width: 2fr;
        margin-right: 1;
    }
    HeaderRow .header-value {
        width: 3fr;
    }
    """

    def __init__(self, name: str = "", value: str = "") -> None:
        super().__init__()
        self.name_input = Input(name, placeholder="X-Robots-Tag", compact=True, classes="header-name")
        self.value_input = Input(value, placeholder="value", compact=True, classes="header-value")

    def controls(self) -> ComposeResult:
        yield self.name_input
        yield self.value_input

    def value(self) -> tuple[str, str]:
        return self.name_input.value.strip(), self.value_input.value


class HeaderList(RowList[HeaderRow]):
    """Headers to set, as name/value rows."""

    ADD_LABEL = "+ Add header"

    def __init__(self, pairs: Iterable[tuple[str, str]], *, id: str | None = None) -> None:
        super().__init__((HeaderRow(k, v) for k, v in pairs), id=id)

    def new_row(self) -> HeaderRow:
        return HeaderRow()

    def values(self) -> dict[str, str]:
        """The rules as the loader reads them (fully blank rows are ignored)."""
        return {name: value for name, value in (row.value() for row in self._rows) if name or value}


def user_problem(name: str, password: str, again: str) -> str:
    """Why a user cannot be added as typed, or ""."""
    if not name:
        return "type a user name"
    if ":" in name:
        return 'a user name cannot contain ":" (Basic auth separates name and password with it)'
    if not password:
        return "type a password, twice"
    if password != again:
        return "the two passwords differ"
    return ""


class UserList(Vertical):
    """User names with their password hashes; add (password typed twice) and remove.

    The password is never kept: the inputs are cleared as soon as it is read, it is
    hashed in a worker thread, and only the hash is stored in `users`.
    """

    DEFAULT_CSS = """
    UserList {
        height: auto;
    }
    UserList > .rows {
        height: auto;
    }
    UserList .user-row {
        height: 1;
    }
    UserList .user-name {
        width: 1fr;
    }
    UserList .user-hash {
        width: auto;
        color: $text-muted;
        margin-right: 1;
    }
    UserList .no-users {
        color: $text-muted;
    }
    UserList .user-input {
        height: 1;
    }
    UserList .user-input > Label {
        width: 10;
        color: $text-muted;
    }
    UserList .user-input > Input {
        width: 1fr;
    }
    UserList #add-user {
        margin-left: 10;
        width: auto;
    }
    UserList #user-status {
        height: auto;
        color: $text-muted;
    }
    """

    class Changed(Message):
        """A user was added, had their password changed, or was removed."""

        def __init__(self, user_list: UserList) -> None:
            super().__init__()
            self.user_list = user_list

        @property
        def control(self) -> UserList:
            return self.user_list

    class _Hashed(Message):
        """From the hashing thread: `name`'s new password hash."""

        def __init__(self, name: str, hashed: str) -> None:
            super().__init__()
            self.name = name
            self.hashed = hashed

    def __init__(self, users: Iterable[tuple[str, str]], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.users: list[tuple[str, str]] = list(users)
        """User names and their scrypt hashes."""
        self.hashing = ""
        """The user whose password is being hashed, or ""."""
        self._remove_buttons: dict[Button, str] = {}

    def compose(self) -> ComposeResult:
        yield Vertical(*self._user_rows(), classes="rows")
        with Horizontal(classes="user-input"):
            yield Label("New user")
            yield Input(placeholder="name", id="new-user", compact=True)
        with Horizontal(classes="user-input"):
            yield Label("Password")
            yield Input(placeholder="password", password=True, id="new-password", compact=True)
        with Horizontal(classes="user-input"):
            yield Label("Again")
            yield Input(placeholder="the same password", password=True, id="new-password-again", compact=True)
        yield Button("Add user", id="add-user", compact=True, tooltip="Hash the password and add the user")
        yield ErrorLine(id="user-problem")
        yield Static(id="user-status")

    def _user_rows(self) -> list[Widget]:
        self._remove_buttons = {}
        if not self.users:
            return [Static("no users yet", classes="no-users")]
        rows: list[Widget] = []
        for name, _hashed in self.users:
            remove = Button("Remove", compact=True, classes="remove-user", tooltip="Remove this user")
            self._remove_buttons[remove] = name
            rows.append(
                Horizontal(
                    Label(Text(name), classes="user-name"),
                    Static("scrypt hash", classes="user-hash"),
                    remove,
                    classes="user-row",
                )
            )
        return rows

    async def _show_users(self) -> None:
        rows = self.query_one(".rows", Vertical)
        await rows.remove_children()
        await rows.mount_all(self._user_rows())

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.users]

    @property
    def pending(self) -> str:
        """Why there is typed-but-not-added work (a name or password not added yet), or ""."""
        if self.hashing:
            return f'still hashing the password of "{self.hashing}"'
        name = self.query_one("#new-user", Input).value.strip()
        typed = self.query_one("#new-password", Input).value or self.query_one("#new-password-again", Input).value
        if name or typed:
            return f'user "{name}" is not added yet: press Add user (or clear the fields)'
        return ""

    @on(Input.Submitted, "#new-user")
    def _name_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.query_one("#new-password", Input).focus()

    @on(Input.Submitted, "#new-password")
    def _password_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.query_one("#new-password-again", Input).focus()

    @on(Input.Submitted, "#new-password-again")
    @on(Button.Pressed, "#add-user")
    def _add_requested(self, event: Input.Submitted | Button.Pressed) -> None:
        event.stop()
        self.add_user()

    def add_user(self) -> None:
        """Check what was typed, clear the passwords and hash in a thread."""
        if self.hashing:
            return
        name_input = self.query_one("#new-user", Input)
        first = self.query_one("#new-password", Input)
        again = self.query_one("#new-password-again", Input)
        name, password = name_input.value.strip(), first.value
        problem = user_problem(name, password, again.value)
        self.query_one("#user-problem", ErrorLine).show([problem] if problem else [])
        if problem:
            return
        first.value = again.value = ""
        self.hashing = name
        self.query_one("#user-status", Static).update(Text(f'Hashing the password of "{name}"…'))
        self._hash(name, password)

    @work(thread=True, exclusive=True, group="hash-password", exit_on_error=False)
    def _hash(self, name: str, password: str) -> None:
        # scrypt takes about 0.1 s of CPU: never on the event loop.
        self.post_message(self._Hashed(name, hash_password(password)))

    @on(_Hashed)
    async def _hashed(self, message: _Hashed) -> None:
        message.stop()
        self.hashing = ""
        name = message.name
        changed = name in self.names
        if changed:
            self.users = [(n, message.hashed if n == name else h) for n, h in self.users]
        else:
            self.users.append((name, message.hashed))
        self.query_one("#new-user", Input).value = ""
        what = "gets a new password" if changed else "added"
        self.query_one("#user-status", Static).update(
            Text(f'"{name}" {what}; only the password\'s hash is kept. Save the site to apply.')
        )
        await self._show_users()
        self.post_message(self.Changed(self))

    @on(Button.Pressed, ".remove-user")
    async def _remove_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        name = self._remove_buttons.get(event.button)
        if name is None:
            return
        self.users = [(n, h) for n, h in self.users if n != name]
        self.query_one("#user-status", Static).update(Text(f'"{name}" removed. Save the site to apply.'))
        await self._show_users()
        self.query_one("#new-user", Input).focus()
        self.post_message(self.Changed(self))
