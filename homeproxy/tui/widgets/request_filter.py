"""`RequestFilter`: which requests the log shows (pure Python, no Textual)."""

from __future__ import annotations

from dataclasses import dataclass, field

from homeproxy.engine import RequestCompleted


def status_class(status: int) -> int:
    """1 to 5 for 1xx to 5xx; 0 when there was no response."""
    return status // 100 if 100 <= status < 600 else 0


@dataclass(frozen=True, slots=True)
class RequestFilter:
    """Which requests the log shows. The default shows all."""

    site: str | None = None
    """Only this site ("" for requests that matched no site)."""
    status_class: int | None = None
    """Only 2xx (2), 3xx (3), 4xx (4) or 5xx (5)."""
    method: str | None = None
    text: str = ""
    """A case-insensitive substring of host+path, client, site, method, status, upstream, cache or error."""
    _needle: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "_needle", self.text.strip().lower())

    @property
    def active(self) -> bool:
        return self != RequestFilter()

    def matches(self, ev: RequestCompleted) -> bool:
        if self.site is not None and ev.site != self.site:
            return False
        if self.status_class is not None and status_class(ev.status) != self.status_class:
            return False
        if self.method is not None and ev.method != self.method:
            return False
        if self._needle:
            haystack = (
                f"{ev.host}{ev.path}\n{ev.client}\n{ev.site}\n{ev.method}\n{ev.status}\n"
                f"{ev.upstream}\n{ev.cache}\n{ev.error}"
            )
            return self._needle in haystack.lower()
        return True
