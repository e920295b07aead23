"""The site form's small list editors: path routes and header rules (users are in `user_list`,
upstreams in `upstream_list`).

Each is a self-contained widget that keeps its rows in Python (so the form can
read them at any time) and posts `Changed` when a row comes or goes; typing in
a row's inputs bubbles up as the inputs' own `Input.Changed`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, Static

from homeproxy.config import Route
from homeproxy.config.model import Upstream


def upstream_data(upstream: Upstream) -> str | dict[str, Any]:
    """An upstream as the loader reads it: its URL, or a table when it has options."""
    if upstream == Upstream(upstream.url):
        return upstream.url
    table: dict[str, Any] = {"url": upstream.url}
    if upstream.weight != 1:
        table["weight"] = upstream.weight
    if upstream.backup:
        table["backup"] = True
    if upstream.max_conns:
        table["max_conns"] = upstream.max_conns
    return table


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
    """A path prefix, its upstreams, and whether to strip the prefix or put another in its place.

    The upstreams are one input of URLs; an upstream that the file gives options (a weight,
    `backup`) keeps them as long as its URL stays in the input."""

    DEFAULT_CSS = """
    RouteRow .route-path {
        width: 12;
        margin-right: 1;
    }
    RouteRow .route-upstreams {
        width: 1fr;
        margin-right: 1;
    }
    RouteRow .route-rewrite {
        width: 9;
        margin-right: 1;
    }
    """

    def __init__(self, route: Route | None = None) -> None:
        super().__init__()
        self.configured: dict[str, Upstream] = {u.url: u for u in route.upstreams} if route else {}
        """The route's upstreams as the file has them, by URL."""
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
        self.rewrite = Input(
            route.rewrite if route else "",
            placeholder="rewrite",
            compact=True,
            classes="route-rewrite",
            tooltip='Put this prefix in place of the path\'s ("/" strips it: /v1/users goes upstream as /users)',
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
        yield self.rewrite
        yield self.strip

    def value(self) -> dict[str, Any]:
        """The route as the loader reads it."""
        value: dict[str, Any] = {
            "path": self.path.value.strip(),
            "upstreams": [
                upstream_data(self.configured[url]) if url in self.configured else url
                for url in split_upstreams(self.upstreams.value)
            ],
            "strip_prefix": self.strip.value,
        }
        if rewrite := self.rewrite.value.strip():
            value["rewrite"] = rewrite
        return value


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
