"""Error placement in the site form: the loader's messages under their fields, touched keys, the first error's focus."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from homeproxy.tui.widgets.form_parts import Field, dig
from homeproxy.tui.widgets.site_form_base import SiteFormBase
from homeproxy.tui.widgets.site_form_rows import ListRow, focus_first


class SiteFormErrors(SiteFormBase):
    """Puts each of the loader's errors (keyed by its path in the site) under the field it is about."""

    def local_problems(self) -> dict[str, list[str]]:
        """What the loader cannot see: a user typed but not added."""
        pending = self.users.pending if self.auth_mode in ("basic", "login") else ""
        return {"auth.users": [pending]} if pending else {}

    def note_touched(self, raw: Mapping[str, Any]) -> None:
        """Remember the keys whose value now differs from the start."""
        for key in self.fields:
            if dig(raw, key) != dig(self.initial, key):
                self.touched.add(key)

    # --- errors --------------------------------------------------------------------------

    def _target(self, key: str) -> str | None:
        """The field that shows an error about `key`."""
        if key == "auth":
            # "basic auth needs at least one user", "forward auth needs forward = ..."
            return {"basic": "auth.users", "login": "auth.users", "forward": "auth.forward"}.get(
                self.auth_mode, "auth.mode"
            )
        if key == "rate_limit":
            return "rate_limit.rate"
        best: str | None = None
        for k in self.fields:
            if (key == k or key.startswith((k + ".", k + "["))) and (best is None or len(k) > len(best)):
                best = k
        return best

    def show_errors(self, errors: Mapping[str, Sequence[str]]) -> list[str]:
        """Put each error under its field (if touched, or `reveal`); return those that have no field."""
        placed: dict[str, list[str]] = {}
        route_rows: dict[int, list[str]] = {}
        unplaced: list[str] = []
        for key, messages in errors.items():
            if m := re.fullmatch(r"routes\[(\d+)\](?:\.(\w+))?", key):
                sub = f"{m.group(2)}: " if m.group(2) else ""
                route_rows.setdefault(int(m.group(1)), []).extend(sub + msg for msg in messages)
                continue
            if key in ("health", "passive_health"):  # one converter per table: "interval: expected a duration ..."
                for msg in messages:
                    sub, _, rest = msg.partition(": ")
                    option = f"{key}.{sub}"
                    if option in self.fields:
                        placed.setdefault(option, []).append(rest)
                    else:
                        placed.setdefault(key, []).append(msg)
                continue
            target = self._target(key) if key else None
            if target is None:
                unplaced.extend(f"{key}: {msg}" if key else msg for msg in messages)
            else:
                placed.setdefault(target, []).extend(messages)
        for key, field in self.fields.items():
            field.show_errors(placed.get(key, []) if self.reveal or key in self.touched else [])
        self.upstreams.show_problems(self.fields["upstreams"].error_line.messages.splitlines())
        self.routes.show_errors(route_rows if self.reveal or "routes" in self.touched else {})
        return unplaced

    def focus_first_error(self) -> bool:
        """Focus the first field (or route row) that shows an error."""
        for widget in self.query(".-invalid"):
            if isinstance(widget, (Field, ListRow)):
                target = widget.control if isinstance(widget, Field) else widget
                if target is self.upstreams and self.upstreams.focus_invalid():
                    widget.scroll_visible()
                    return True
                if focus_first(target):
                    widget.scroll_visible()
                    return True
        return False

    def error_text(self) -> str:
        """Every error the form shows, one per line (for tests and the status line)."""
        lines = [f.error_line.messages for f in self.fields.values() if f.error_line.messages]
        lines += [row.error_line.messages for row in self.routes.rows if row.error_line.messages]
        return "\n".join(lines)
