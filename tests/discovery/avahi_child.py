"""The homeproxy side of `test_avahi_peer.py`, run inside the test's network namespace.

`python -m tests.discovery.avahi_child PLEX_HOST TAKEN_HOST NAS_INSTANCE` (under
`ip netns exec`, as Python 3.11 has no `os.setns`). It speaks JSON lines on
stdout: `browsed` once homeproxy's `Browser` has resolved avahi's NAS service,
`applied` once a `Publisher` has settled PLEX_HOST and TAKEN_HOST; then it
waits for a line on stdin, closes the publisher (goodbyes) and says `closed`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from zeroconf.asyncio import AsyncZeroconf

from homeproxy.discovery.browse import Browser
from homeproxy.discovery.directory import ServiceDirectory
from homeproxy.discovery.publish import Publisher, PublishSpec

# Inside the namespace only loopback exists; the address keeps zeroconf off any other link anyway.
INTERFACES = ["127.0.0.1"]


def say(step: str, **fields: Any) -> None:
    print(json.dumps({"step": step, **fields}), flush=True)


async def main(plex: str, taken: str, nas: str) -> None:
    aiozc = AsyncZeroconf(interfaces=INTERFACES)
    directory = ServiceDirectory()
    events: list[str] = []
    try:
        start = time.monotonic()
        browser = Browser(aiozc, directory, lambda e: events.append(type(e).__name__), types=["_http._tcp"])
        name = f"{nas}._http._tcp.local."
        while (found := directory.get(name)) is None or not found.port:
            if time.monotonic() - start > 10:
                break
            await asyncio.sleep(0.05)
        if found is None:
            say("browsed", error=f"{name} not found", seen=[s.name for s in directory.snapshot()])
        else:
            say(
                "browsed",
                seconds=round(time.monotonic() - start, 3),
                port=found.port,
                path=found.path,
                properties=dict(found.properties),
                addresses=list(found.addresses),
                host=found.host,
            )
        await browser.close()

        publisher = Publisher(aiozc, lambda e: events.append(type(e).__name__), INTERFACES)
        start = time.monotonic()
        await publisher.apply(
            {
                host: PublishSpec(host=host, site=host.split(".")[0], port=8080, advertise=False)
                for host in (plex, taken)
            }
        )
        states = {h: [s.status, list(s.addresses), list(s.holders)] for h, s in publisher.states.items()}
        say("applied", seconds=round(time.monotonic() - start, 3), states=states, events=events)

        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        start = time.monotonic()
        await publisher.close()
        say("closed", seconds=round(time.monotonic() - start, 3), events=events)
    finally:
        await aiozc.async_close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
