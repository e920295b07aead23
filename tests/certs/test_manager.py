"""CertManager on its own, with the real local CA in tmp_path and configs parsed from TOML."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from homeproxy.certs.ca import LocalCA
from homeproxy.certs.manager import CertManager
from homeproxy.config.load import decode_config, parse_config
from homeproxy.config.model import Config
from tests.certs import write_pair
from tests.conftest import free_port


def config(text: str) -> Config:
    return parse_config(decode_config(text.encode(), "config.toml"), "config.toml")


INTERNAL = config('[[sites]]\nname = "ha"\nhosts = ["ha.home.arpa"]\nupstreams = ["http://127.0.0.1:9"]\ntls = true\n')


async def test_a_renewal_between_prepare_and_commit_is_kept(tmp_path: Path) -> None:
    m = CertManager(tmp_path)
    m.commit(m.prepare(INTERNAL))
    [first] = m.statuses()
    prepared = m.prepare(INTERNAL)  # an apply starts (the site is unchanged)...
    m.renew("ha")
    assert await m.check() == ["ha"]  # ...a renewal lands meanwhile...
    [renewed] = m.statuses()
    assert renewed.fingerprint != first.fingerprint
    m.commit(prepared)  # ...and the apply completes
    [after] = m.statuses()
    assert after.fingerprint == renewed.fingerprint


async def test_a_stand_in_is_replaced_before_it_expires_while_acme_keeps_failing(tmp_path: Path) -> None:
    down = f"https://127.0.0.1:{free_port()}/dir"  # nothing listens: every ACME attempt fails at once
    acme = config(
        f'[tls]\nissuer = "acme"\nacme_directory = "{down}"\n\n'
        '[[sites]]\nname = "nas"\nhosts = ["nas.example.org"]\nupstreams = ["http://127.0.0.1:9"]\ntls = true\n'
    )
    now = [time.time()]
    m = CertManager(tmp_path, clock=lambda: now[0])
    m.commit(m.prepare(acme))
    [start] = m.statuses()
    assert start.state == "temporary" and start.not_after is not None
    assert start.self_signed  # a public name: the local CA may not sign it

    m.renew("nas")
    await m.check()
    [failed] = m.statuses()
    assert failed.state == "temporary" and failed.last_error.startswith("ACME")
    assert failed.fingerprint == start.fingerprint  # young stand-in: kept

    now[0] = start.not_after.timestamp() - 3600  # an hour before the stand-in would expire
    m.renew("nas")
    await m.check()
    [late] = m.statuses()
    assert late.state == "temporary" and late.last_error
    assert late.fingerprint != start.fingerprint and late.not_after is not None and late.not_after > start.not_after


async def test_a_broken_new_pair_is_reported_once_per_change_without_a_doubled_site(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = LocalCA.open(tmp_path / "their-ca")
    crt, key = write_pair(ca.issue(("files.home.arpa",)), tmp_path / "pair")
    own = config(
        f'[[sites]]\nname = "files"\nhosts = ["files.home.arpa"]\nupstreams = ["http://127.0.0.1:9"]\n'
        f'tls = true\ncert = "{crt}"\nkey = "{key}"\n'
    )
    m = CertManager(tmp_path / "data")
    m.commit(m.prepare(own))
    [good] = m.statuses()
    key.write_bytes(ca.issue(("other.home.arpa",)).key_pem)  # a key that does not match
    with caplog.at_level(logging.WARNING, "homeproxy.certs"):
        await m.check()
        await m.check()  # unchanged since: not reported again
    [kept] = m.statuses()
    assert kept.fingerprint == good.fingerprint and kept.state == "error"
    [record] = [r for r in caplog.records if "previous pair keeps serving" in r.getMessage()]
    message = record.getMessage()
    assert message.startswith('site "files": ') and message.count('site "files"') == 1
    assert message.endswith("(read again when the files change)")


def test_an_internal_certificate_is_not_called_self_signed(tmp_path: Path) -> None:
    m = CertManager(tmp_path)
    m.commit(m.prepare(INTERNAL))
    [status] = m.statuses()
    assert status.state == "ok" and not status.self_signed
