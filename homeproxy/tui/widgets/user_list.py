"""The site form's Basic/login users: add one (its password typed twice) or remove one.

Passwords are hashed in a worker thread and only the hash is kept: the password
inputs are cleared before hashing starts.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Static

from homeproxy.passwords import hash_password
from homeproxy.tui.widgets.site_form_rows import ErrorLine


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
