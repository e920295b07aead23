"""Your own certificate files: load and check a PEM chain + key pair, and which hosts its names cover."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from homeproxy.certs.status import IssuedCert

#: Certificate and key files are small; anything bigger is not one (and is not read whole).
MAX_FILE_BYTES = 1024 * 1024

_PEM_CERT = b"-----BEGIN CERTIFICATE-----"
_PEM_KEY_MARK = b"PRIVATE KEY-----"


class PairError(Exception):
    """A certificate/key pair homeproxy cannot use. `key` is "cert" or "key": the config key to blame."""

    def __init__(self, key: str, file: str, message: str) -> None:
        self.key = key
        self.file = file
        self.message = message
        super().__init__(f"{file}: {message}")


def _expand(key: str, path: str | Path) -> Path:
    try:
        return Path(path).expanduser()
    except RuntimeError:  # "~name/..." where this machine has no user "name"
        first = str(path).split("/", 1)[0]
        raise PairError(key, str(path), f"cannot expand {first}: there is no such user on this machine") from None


def _read(key: str, path: Path) -> bytes:
    what = "certificate" if key == "cert" else "private key"
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise PairError(key, str(path), f"no such file (the {what})") from None
    except IsADirectoryError:
        raise PairError(key, str(path), f"is a directory, not a {what} file") from None
    except PermissionError:
        raise PairError(key, str(path), "homeproxy may not read it (check the file's owner and mode)") from None
    except OSError as e:
        raise PairError(key, str(path), f"cannot read it ({e.strerror or type(e).__name__})") from None
    if len(data) > MAX_FILE_BYTES:
        raise PairError(key, str(path), f"larger than {MAX_FILE_BYTES // 1024} KiB: not a {what} file")
    return data


def _spki(public_key: object) -> bytes:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return public_key.public_bytes(*fmt)  # type: ignore[attr-defined, no-any-return]


def _certificates(path: Path, data: bytes) -> list[x509.Certificate]:
    file = str(path)
    if _PEM_CERT not in data:
        if _PEM_KEY_MARK in data:
            raise PairError("cert", file, "holds a private key, not a certificate (are cert and key swapped?)")
        raise PairError("cert", file, "no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise PairError("cert", file, "a certificate in it is damaged (not valid PEM/DER)") from None
    if not certs:  # pragma: no cover - the marker check above makes this unlikely
        raise PairError("cert", file, "no certificate in it")
    return certs


def _private_key(path: Path, data: bytes) -> PrivateKeyTypes:
    file = str(path)
    if _PEM_KEY_MARK not in data:
        if _PEM_CERT in data:
            raise PairError("key", file, "holds a certificate, not a private key (are cert and key swapped?)")
        raise PairError("key", file, "no PEM private key in it (expected -----BEGIN PRIVATE KEY-----)")
    if b"ENCRYPTED" in data:
        raise PairError("key", file, "the key is encrypted; homeproxy needs it unencrypted (mode 0600)")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise PairError("key", file, "the key is encrypted; homeproxy needs it unencrypted (mode 0600)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise PairError("key", file, "the private key in it is damaged or of a kind homeproxy cannot use") from None


def cert_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The DNS names and IP addresses in a certificate's SANs (clients ignore the CN since RFC 6125)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    dns = [str(n).lower() for n in san.get_values_for_type(x509.DNSName)]
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return tuple(dns + ips)


def load_pair(cert_path: str | Path, key_path: str | Path, *, now: datetime | None = None) -> IssuedCert:
    """Read a PEM chain (leaf first) and its key; raise `PairError` naming the file to fix.

    Checks: both readable and PEM, the key is the leaf's, the leaf has not expired. The chain
    is re-encoded (text between PEM blocks dropped), the key re-encoded as PKCS#8.
    """
    cpath, kpath = _expand("cert", cert_path), _expand("key", key_path)
    certs = _certificates(cpath, _read("cert", cpath))
    key = _private_key(kpath, _read("key", kpath))
    mine = _spki(key.public_key())
    if _spki(certs[0].public_key()) != mine:
        at = next((i for i, c in enumerate(certs) if _spki(c.public_key()) == mine), None)
        if at is not None:
            raise PairError(
                "cert",
                str(cpath),
                f"the certificate for this key is number {at + 1} in the file; put the site's own certificate "
                "first, then the intermediates (the order of certbot's fullchain.pem)",
            )
        raise PairError("key", str(kpath), f"this key does not belong to the certificate in {cpath}")
    leaf = certs[0]
    when = now or datetime.now(UTC)
    if leaf.not_valid_after_utc < when:
        raise PairError("cert", str(cpath), f"the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    pem = serialization.Encoding.PEM
    return IssuedCert(
        chain_pem=b"".join(c.public_bytes(pem) for c in certs),
        key_pem=key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        names=cert_names(leaf),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
    )


def _host(name: str) -> str:
    out = name.strip().rstrip(".").lower()
    if out and not out.isascii():
        with contextlib.suppress(UnicodeError):
            out = out.encode("idna").decode("ascii")
    return out


def covers(pattern: str, host: str) -> bool:
    """Does the certificate name `pattern` cover `host`? (RFC 6125 6.4)

    Case-insensitive; a wildcard is a whole left-most label and matches exactly one label
    (`*.home.arpa` covers `a.home.arpa`, not `a.b.home.arpa` nor `home.arpa`); a wildcard host
    (`*.home.arpa` as a site host) is covered only by the same wildcard. IP addresses match
    only themselves, however written.
    """
    p, h = _host(pattern), _host(host)
    if not p or not h:
        return False
    pip, hip = _ip(p), _ip(h)
    if pip is not None or hip is not None:
        return pip is not None and pip == hip
    if p == h:
        return True
    if not p.startswith("*.") or "*" in p[2:]:
        return False
    first, _, rest = h.partition(".")
    return bool(first) and first != "*" and rest == p[2:] and "." in rest


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def uncovered_hosts(cert: IssuedCert, hosts: Sequence[str]) -> list[str]:
    """The hosts that none of the certificate's names cover, in the order given."""
    return [h for h in hosts if not any(covers(n, h) for n in cert.names)]
