"""The root as devices take it: its SHA-256 fingerprint and the iOS/macOS profile (`mobileconfig`)."""

from __future__ import annotations

import hashlib
import plistlib
import uuid


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate as upper-case hex pairs joined by colons."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def mobileconfig(root_der: bytes, *, name: str = "homeproxy local CA") -> bytes:
    """An iOS/macOS configuration profile (unsigned XML plist) holding only the root certificate.

    UUIDs and identifiers come from the root's fingerprint, so the same root always gives the
    same profile and installing a new one replaces it.
    """
    digest = hashlib.sha256(root_der).hexdigest()
    ns = uuid.UUID("8d7b6f0e-2f4a-5c1e-9b8a-6f686f6d6570")
    payload = {
        "PayloadCertificateFileName": "homeproxy-root.cer",
        "PayloadContent": root_der,
        "PayloadDescription": "Adds homeproxy's root certificate, so this device trusts the home sites it serves.",
        "PayloadDisplayName": name,
        "PayloadIdentifier": f"org.homeproxy.root.{digest[:16]}.cert",
        "PayloadType": "com.apple.security.root",
        "PayloadUUID": str(uuid.uuid5(ns, "cert:" + digest)).upper(),
        "PayloadVersion": 1,
    }
    profile = {
        "PayloadContent": [payload],
        "PayloadDescription": f"Installs the root certificate of {name} (SHA-256 {fingerprint(root_der)}). "
        "After installing, turn on full trust in Settings > General > About > Certificate Trust Settings.",
        "PayloadDisplayName": name,
        "PayloadIdentifier": f"org.homeproxy.root.{digest[:16]}",
        "PayloadOrganization": "homeproxy",
        "PayloadRemovalDisallowed": False,
        "PayloadType": "Configuration",
        "PayloadUUID": str(uuid.uuid5(ns, "profile:" + digest)).upper(),
        "PayloadVersion": 1,
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)
