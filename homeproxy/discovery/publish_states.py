"""Each wanted name's `NameState` for the TUI, and the events and log lines that report a change."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType

from homeproxy.discovery.events import NameAnnounced, NameConflict
from homeproxy.discovery.publish_names import NameState, NameStatus, _Held

log = logging.getLogger("homeproxy.discovery.publish")  # one logger name for the whole publisher


class _NameStates:
    """The publisher's part that keeps `states` (replaced whole, never changed in place)."""

    _states: Mapping[str, NameState]
    _clock: Callable[[], float]
    _publish: Callable[[object], None]
    _retry_interval: float
    _addresses: tuple[str, ...]
    _held: dict[str, _Held]

    def _conflict(self, host: str, holders: tuple[str, ...]) -> None:
        previous = self._states.get(host)
        self._set_state(
            host,
            "conflict",
            holders=holders,
            detail=f"Another device ({', '.join(holders)}) already answers for {host}, so homeproxy leaves"
            f" the name to it and checks again every {self._retry_interval:g} s.",
        )
        if previous is None or previous.status != "conflict" or previous.holders != holders:
            log.warning("mDNS: %s is already answered by %s; not announcing it", host, ", ".join(holders))
            self._publish(NameConflict(host, holders))

    def _announced(self, host: str) -> None:
        held = self._held[host]
        previous = self._states.get(host)
        detail = f"Answering for {host} with {', '.join(self._addresses)}"
        if held.advert is not None:
            kind = "HTTPS" if held.spec.https else "HTTP"
            instance = held.advert.name.removesuffix("." + held.advert.type)
            detail += f", advertised as the {kind} service “{instance}”"
        self._set_state(host, "announced", addresses=self._addresses, detail=detail + ".")
        if previous is None or previous.status != "announced" or previous.addresses != self._addresses:
            log.info("mDNS: answering for %s with %s", host, ", ".join(self._addresses))
            self._publish(NameAnnounced(host, self._addresses))

    def _no_address_detail(self, host: str) -> str:
        return f"No network address to announce {host} with; homeproxy announces it when an interface comes up."

    def _state_status(self, host: str) -> str | None:
        state = self._states.get(host)
        return state.status if state else None

    def _set_state(
        self,
        host: str,
        status: NameStatus,
        *,
        addresses: tuple[str, ...] = (),
        holders: tuple[str, ...] = (),
        detail: str,
    ) -> None:
        previous = self._states.get(host)
        state = NameState(host, status, addresses, holders, detail, self._clock())
        if previous is not None and previous.status == status:
            state = replace(state, since=previous.since)
        if previous == state:
            return
        states = dict(self._states)
        states[host] = state
        self._states = MappingProxyType(states)

    def _drop_states(self, hosts: Iterable[str]) -> None:
        drop = set(hosts)
        if drop & self._states.keys():
            self._states = MappingProxyType({h: s for h, s in self._states.items() if h not in drop})
