"""QR codes drawn in the terminal: `qr_text()` turns a URL into half-block text a phone can scan.

segno builds the symbol (no hand-written encoder); each character cell shows
two modules, one above the other, with "▀", "▄", "█" or a space. The colours
are fixed black on white, whatever the theme: a scanner needs dark modules on
a light ground, and a dark theme's inverted code is one that many phones
refuse.
"""

from __future__ import annotations

import segno
from rich.style import Style
from rich.text import Text

#: Dark modules on a light ground, never the theme's colours (see the module docstring).
QR_STYLE = Style(color="#000000", bgcolor="#ffffff")
#: The quiet zone around the symbol, in modules. The standard asks for 4; phones read 1 reliably
#: when the ground is white, and every module saved is a row of a 24-line terminal.
QR_BORDER = 1

#: (top dark, bottom dark) -> the character that draws that pair of modules.
_HALVES = {(False, False): " ", (True, False): "▀", (False, True): "▄", (True, True): "█"}


def qr_rows(data: str, *, border: int = QR_BORDER) -> list[str]:
    """The QR code of `data` as lines of half-block characters (dark = drawn), top to bottom.

    Error correction is the lowest level that segno may raise for free (`boost_error`):
    the symbol stays as small as the data allows."""
    code = segno.make(data, error="l", micro=False, boost_error=True)
    matrix = [[bool(m) for m in row] for row in code.matrix_iter(scale=1, border=border)]
    if len(matrix) % 2:
        matrix.append([False] * len(matrix[0]))  # the last half row is light: more quiet zone
    return [
        "".join(_HALVES[top, bottom] for top, bottom in zip(upper, lower, strict=True))
        for upper, lower in zip(matrix[::2], matrix[1::2], strict=True)
    ]


def qr_text(data: str, *, border: int = QR_BORDER) -> Text:
    """The QR code of `data` as Text, black on white (`qr_rows` for the shape)."""
    text = Text(no_wrap=True, overflow="crop", end="")
    for i, row in enumerate(qr_rows(data, border=border)):
        if i:
            text.append("\n")
        text.append(row, style=QR_STYLE)
    return text


def qr_size(data: str, *, border: int = QR_BORDER) -> tuple[int, int]:
    """Width and height, in cells, of `qr_text(data)`."""
    rows = qr_rows(data, border=border)
    return len(rows[0]), len(rows)
