"""What a config problem is and how it reads: `ConfigError`, `ConfigInvalid` and `format_key`."""

from __future__ import annotations

from dataclasses import dataclass

from homeproxy.config.toml_scan import KeyPath


@dataclass(frozen=True, slots=True)
class ConfigError:
    """One problem in a config file."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigInvalid(Exception):
    """A config failed to parse or validate; `errors` lists every problem."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(str(e) for e in errors))


def format_key(path: KeyPath) -> str:
    """`("sites", 0, "hosts")` -> `sites[0].hosts`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out
