"""The TLS part of the config: `[tls]`, a site's `tls`/`issuer`, and its own `cert`/`key` files.

The pairs are real files made with LocalCA or cryptography in tmp_path. Every error names the
file, the line and the key path; a host the certificate does not cover is a warning, and the
config still loads (`homeproxy check` prints it and exits 0).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from homeproxy.certs.ca import LocalCA
from homeproxy.certs.status import IssuedCert
from homeproxy.cli import main
from homeproxy.config import ConfigError, ConfigInvalid
from homeproxy.config.load import parse_config
from homeproxy.config.model import Config, TlsSettings
from tests.certs import write_pair

FILE = "/srv/homeproxy/config.toml"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA.open(tmp_path_factory.mktemp("tls-config") / "ca")


def line(text: str, needle: str) -> int:
    """The 1-based number of the first line of `text` holding `needle`."""
    return next(i for i, row in enumerate(text.splitlines(), 1) if needle in row)


def site(hosts: str = '["ha.home.arpa"]', *, extra: str = "", name: str = "ha") -> str:
    return f'[[sites]]\nname = "{name}"\nhosts = {hosts}\nupstreams = ["http://192.168.1.20:8123"]\n{extra}'


def files(cert: Path | str, key: Path | str) -> str:
    return f'tls = true\ncert = "{cert}"\nkey = "{key}"\n'


def errors(text: str) -> tuple[ConfigError, ...]:
    with pytest.raises(ConfigInvalid) as info:
        parse_config(text, FILE)
    return info.value.errors


def only_error(text: str) -> ConfigError:
    errs = errors(text)
    assert len(errs) == 1, "\n".join(map(str, errs))
    return errs[0]


def loads(text: str) -> tuple[Config, list[ConfigError]]:
    warnings: list[ConfigError] = []
    return parse_config(text, FILE, warnings), warnings


def _self_signed_for(name: str) -> IssuedCert:
    """A self-signed leaf for a public name, as a user's certbot-like tool would provide one."""
    pkey = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(pkey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(pkey, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return IssuedCert(
        chain_pem=cert.public_bytes(pem),
        key_pem=pkey.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        names=(name,),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


# --- a site's own certificate and key -----------------------------------------------------


def test_a_good_pair_loads_without_warnings(ca: LocalCA, tmp_path: Path) -> None:
    crt, key = write_pair(ca.issue(["ha.home.arpa", "ha.local"]), tmp_path)
    config, warnings = loads(site('["ha.home.arpa", "ha.local"]', extra=files(crt, key)))
    assert warnings == []
    (s,) = config.sites
    assert (s.tls, s.cert, s.key) == (True, str(crt), str(key))
    assert config.tls_sites == (s,)


def test_a_mismatched_pair_names_the_key_file_its_line_and_key(ca: LocalCA, tmp_path: Path) -> None:
    crt, _ = write_pair(ca.issue(["ha.home.arpa"]), tmp_path, "ha")
    _, other = write_pair(ca.issue(["ha.home.arpa"]), tmp_path, "other")
    text = "[server]\nhttp_port = 8080\n\n" + site(extra=files(crt, other))
    err = only_error(text)
    n = line(text, "key = ")
    assert (err.file, err.line, err.key) == (FILE, n, "sites[0].key")
    assert str(err) == f"{FILE}:{n}: sites[0].key: {other}: this key does not belong to the certificate in {crt}"


def test_a_chain_in_the_wrong_order_blames_the_cert_line(ca: LocalCA, tmp_path: Path) -> None:
    issued = ca.issue(["ha.home.arpa"])
    leaf, inter = x509.load_pem_x509_certificates(issued.chain_pem)
    crt, key = tmp_path / "reversed.crt", tmp_path / "site.key"
    crt.write_bytes(inter.public_bytes(serialization.Encoding.PEM) + leaf.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(issued.key_pem)
    text = site(extra=files(crt, key))
    err = only_error(text)
    assert (err.line, err.key) == (line(text, "cert = "), "sites[0].cert")
    assert str(crt) in err.message and "first" in err.message


def test_an_expired_certificate_is_an_error(tmp_path: Path) -> None:
    pkey = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ha.home.arpa")])
    ended = datetime(2023, 1, 2, 3, 4, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pkey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(ended - timedelta(days=30))
        .not_valid_after(ended)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("ha.home.arpa")]), critical=False)
        .sign(pkey, hashes.SHA256())
    )
    crt, key = tmp_path / "old.crt", tmp_path / "old.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        pkey.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    text = site(extra=files(crt, key))
    err = only_error(text)
    assert (err.line, err.key) == (line(text, "cert = "), "sites[0].cert")
    assert err.message == f"{crt}: the certificate expired on 2023-01-02 03:04 UTC"


def test_a_missing_file(ca: LocalCA, tmp_path: Path) -> None:
    crt, _ = write_pair(ca.issue(["ha.home.arpa"]), tmp_path)
    text = site(extra=files(crt, tmp_path / "gone.key"))
    err = only_error(text)
    assert (err.line, err.key) == (line(text, "key = "), "sites[0].key")
    assert err.message == f"{tmp_path / 'gone.key'}: no such file (the private key)"


def test_cert_without_key_and_key_without_cert(ca: LocalCA, tmp_path: Path) -> None:
    crt, key = write_pair(ca.issue(["ha.home.arpa"]), tmp_path)
    text = site(extra=f'tls = true\ncert = "{crt}"\n')
    err = only_error(text)
    assert (err.line, err.key) == (line(text, "cert = "), "sites[0].cert")
    assert err.message == "cert needs key too: the certificate and its private key"
    text = site(extra=f'tls = true\nkey = "{key}"\n')
    err = only_error(text)
    assert (err.line, err.key) == (line(text, "key = "), "sites[0].key")
    assert "key needs cert too" in err.message


def test_a_cert_without_tls(ca: LocalCA, tmp_path: Path) -> None:
    crt, key = write_pair(ca.issue(["ha.home.arpa"]), tmp_path)
    text = site(extra=f'cert = "{crt}"\nkey = "{key}"\n')
    err = only_error(text)
    assert (err.line, err.key) == (line(text, "cert = "), "sites[0].cert")
    assert "tls = true" in err.message
    err = only_error(site(extra=f'tls = false\ncert = "{crt}"\nkey = "{key}"\n'))
    assert err.key == "sites[0].cert"


@pytest.mark.parametrize("which", ["cert", "key"])
def test_a_relative_path_is_refused(ca: LocalCA, tmp_path: Path, which: str) -> None:
    crt, key = write_pair(ca.issue(["ha.home.arpa"]), tmp_path)
    given = {"cert": str(crt), "key": str(key), which: f"certs/site.{which}"}
    text = site(extra=files(given["cert"], given["key"]))
    err = only_error(text)
    assert (err.line, err.key) == (line(text, f"{which} = "), f"sites[0].{which}")
    assert f'"certs/site.{which}"' in err.message and "absolute path" in err.message


def test_a_home_relative_path_is_fine(ca: LocalCA) -> None:
    write_pair(ca.issue(["ha.home.arpa"]), Path.home() / "certs")  # HOME is under tmp_path
    config, warnings = loads(site(extra=files("~/certs/site.crt", "~/certs/site.key")))
    assert config.sites[0].cert == "~/certs/site.crt" and warnings == []


def test_an_unknown_user_home_is_an_error_not_a_crash(tmp_path: Path) -> None:
    text = site(extra=files("~no-such-user-homeproxy/site.crt", tmp_path / "site.key"))
    err = only_error(text)
    assert (err.line, err.key) == (line(text, "cert = "), "sites[0].cert")
    assert "no-such-user-homeproxy" in err.message


def test_a_disabled_site_keeps_its_pair_unread(tmp_path: Path) -> None:
    """Nothing serves it, so files that are gone (a certbot dir moved away) do not stop the config."""
    config, _ = loads(site(extra=files(tmp_path / "gone.crt", tmp_path / "gone.key") + "enabled = false\n"))
    assert config.tls_sites == ()


def test_every_broken_site_is_reported_at_once(ca: LocalCA, tmp_path: Path) -> None:
    crt, _ = write_pair(ca.issue(["ha.home.arpa"]), tmp_path, "ha")
    _, other = write_pair(ca.issue(["ha.home.arpa"]), tmp_path, "other")
    text = site(extra=files(crt, other)) + "\n" + site('["b.home.arpa"]', name="b", extra=files(crt, "rel.key"))
    errs = errors(text)
    assert [(e.key, e.line) for e in errs] == [
        ("sites[0].key", line(text, f'key = "{other}"')),
        ("sites[1].key", line(text, 'key = "rel.key"')),
    ]


# --- hosts the certificate does not cover: a warning ----------------------------------------


def test_an_uncovered_host_is_a_warning_naming_it(ca: LocalCA, tmp_path: Path) -> None:
    crt, key = write_pair(ca.issue(["*.home.arpa"]), tmp_path)
    text = site('["ha.home.arpa", "a.b.home.arpa", "ha.local"]', extra=files(crt, key))
    config, warnings = loads(text)
    assert [s.name for s in config.sites] == ["ha"]
    assert [(w.file, w.line, w.key) for w in warnings] == [(FILE, line(text, "hosts = "), "sites[0].hosts")] * 2
    assert '"a.b.home.arpa"' in warnings[0].message and str(crt) in warnings[0].message
    assert "*.home.arpa" in warnings[0].message  # what it does name
    assert '"ha.local"' in warnings[1].message


def test_uncollected_warnings_go_to_the_log_once(ca: LocalCA, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    crt, key = write_pair(ca.issue(["ha.home.arpa"]), tmp_path)
    text = site('["ha.home.arpa", "ha.local"]', extra=files(crt, key))
    with caplog.at_level(logging.WARNING, logger="homeproxy.config"):
        parse_config(text, FILE)
        parse_config(text, FILE)
    logged = [r.getMessage() for r in caplog.records if r.name == "homeproxy.config"]
    assert len(logged) == 1 and '"ha.local"' in logged[0] and "sites[0].hosts" in logged[0]


def test_homeproxy_check_prints_the_warning_and_succeeds(
    ca: LocalCA, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crt, key = write_pair(ca.issue(["ha.home.arpa"]), tmp_path)
    text = site('["ha.home.arpa", "ha.local"]', extra=files(crt, key))
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    assert main(["check", "--config", str(cfg)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"{cfg}: ok, 1 site"
    (warning,) = err.splitlines()
    assert warning.startswith(f"warning: {cfg}:{line(text, 'hosts = ')}: sites[0].hosts: ")
    assert '"ha.local"' in warning


def test_homeproxy_check_fails_on_a_mismatched_pair(
    ca: LocalCA, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crt, _ = write_pair(ca.issue(["ha.home.arpa"]), tmp_path, "ha")
    _, other = write_pair(ca.issue(["ha.home.arpa"]), tmp_path, "other")
    text = site(extra=files(crt, other))
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    assert main(["check", "--config", str(cfg)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{cfg}:{line(text, 'key = ')}: sites[0].key: {other}: this key does not belong to the certificate in {crt}",
        f"{cfg}: 1 error",
    ]


# --- the local CA's name constraints --------------------------------------------------------


def test_a_public_name_on_the_internal_issuer_is_an_error(tmp_path: Path) -> None:
    text = site('["nas.home.arpa", "nas.example.org"]', extra="tls = true\n")
    err = only_error(text)
    assert (err.line, err.key) == (line(text, "hosts = "), "sites[0].hosts")
    assert '"nas.example.org"' in err.message and "nas.home.arpa" not in err.message
    assert 'issuer = "acme"' in err.message and "own cert and key" in err.message
    # the same hosts are fine with ACME (per site or by default) or the user's own files
    assert loads(site('["nas.example.org"]', extra='tls = true\nissuer = "acme"\n'))[0].sites
    assert loads('[tls]\nissuer = "acme"\n\n' + site('["nas.example.org"]', extra="tls = true\n"))[0].sites
    crt, key = write_pair(_self_signed_for("nas.example.org"), tmp_path)
    assert loads(site('["nas.example.org"]', extra=files(crt, key)))[1] == []
    # a site may go back to the local CA under an ACME default: then the constraint applies again
    text = '[tls]\nissuer = "acme"\n\n' + site('["nas.example.org"]', extra='tls = true\nissuer = "internal"\n')
    assert only_error(text).key == "sites[0].hosts"


def test_single_label_and_public_addresses_on_the_internal_issuer() -> None:
    errs = errors(site('["nas", "8.8.8.8", "192.168.1.5", "nas.lan"]', extra="tls = true\n"))
    assert [e.key for e in errs] == ["sites[0].hosts"] * 2
    assert '"nas"' in errs[0].message and '"8.8.8.8"' in errs[1].message


def test_a_site_without_tls_may_have_any_name() -> None:
    assert loads(site('["nas.example.org"]'))[0].sites[0].tls is False


@pytest.mark.parametrize("wildcard", ["*.lan", "*.arpa"])
def test_a_wildcard_directly_under_a_top_level_name_is_refused(wildcard: str) -> None:
    text = site(f'["{wildcard}"]', extra="tls = true\n")
    errs = errors(text)
    refusal = [e for e in errs if "wildcard directly under a top-level name" in e.message]
    assert len(refusal) == 1, "\n".join(map(str, errs))
    assert (refusal[0].line, refusal[0].key) == (line(text, "hosts = "), "sites[0].hosts")
    assert f'"{wildcard}"' in refusal[0].message and '"*.home.arpa"' in refusal[0].message
    if wildcard == "*.lan":  # under a permitted name: only the wildcard rule speaks
        assert len(errs) == 1


def test_a_wildcard_under_a_longer_name_is_fine() -> None:
    assert loads(site('["*.home.arpa"]', extra="tls = true\n"))[0].sites[0].hosts == ("*.home.arpa",)


# --- the [tls] table ----------------------------------------------------------------------


def test_a_full_tls_table_loads() -> None:
    text = (
        "[tls]\n"
        'issuer = "ACME"\n'
        "serve_root = false\n"
        'acme_email = " admin@example.org "\n'
        'acme_directory = "letsencrypt-staging"\n'
        'acme_ca_bundle = "/etc/homeproxy/lan-ca.pem"\n\n' + site('["nas.example.org"]', extra="tls = true\n")
    )
    config, warnings = loads(text)
    assert config.tls == TlsSettings(
        issuer="acme",
        serve_root=False,
        acme_email="admin@example.org",
        acme_directory="letsencrypt-staging",
        acme_ca_bundle="/etc/homeproxy/lan-ca.pem",
    )
    assert config.tls.acme_url == "https://acme-staging-v02.api.letsencrypt.org/directory"
    assert config.issuer_of(config.sites[0]) == "acme"
    assert warnings == []


def test_an_acme_directory_url() -> None:
    url = "https://ca.home.arpa:9000/acme/acme/directory"
    config, _ = loads(f'[tls]\nacme_directory = "{url}"\n')
    assert config.tls.acme_url == url
    assert config.tls.issuer == "internal"  # the default


def test_an_empty_tls_table_is_the_defaults() -> None:
    assert loads("[tls]\n")[0].tls == TlsSettings()


def test_every_bad_tls_key_is_reported_with_its_line() -> None:
    text = (
        "[tls]\n"
        'issuer = "letsencrypt"\n'
        'acme_email = "not-an-address"\n'
        'acme_directory = "http://ca.home.arpa/directory"\n'
        'acme_mail = "admin@example.org"\n'
        'serve_root = "yes"\n'
    )
    errs = errors(text)
    assert [(e.line, e.key) for e in errs] == [
        (2, "tls.issuer"),
        (3, "tls.acme_email"),
        (4, "tls.acme_directory"),
        (5, "tls.acme_mail"),
        (6, "tls.serve_root"),
    ]
    issuer, email, directory, unknown, _ = errs
    assert issuer.message == 'expected one of "internal", "acme", got "letsencrypt"'
    assert '"not-an-address"' in email.message and "e-mail address" in email.message
    assert '"letsencrypt", "letsencrypt-staging"' in directory.message and "https://" in directory.message
    assert unknown.message == 'unknown key "acme_mail"; did you mean "acme_email"?'
    assert str(issuer) == f'{FILE}:2: tls.issuer: expected one of "internal", "acme", got "letsencrypt"'


def test_a_bad_site_issuer() -> None:
    text = site(extra='tls = true\nissuer = "letsencrypt"\n')
    err = only_error(text)
    assert (err.line, err.key) == (line(text, "issuer = "), "sites[0].issuer")
    assert '"internal", "acme"' in err.message


def test_tls_must_be_a_table() -> None:
    err = only_error('tls = "on"\n')
    assert (err.line, err.key) == (1, "tls")
    assert "expected a table" in err.message


def test_an_address_host_on_a_tls_site_is_a_warning_that_says_why() -> None:
    text = site('["ha.home.arpa", "192.168.1.20", "10.0.0.20"]', extra="tls = true\n")
    config, warnings = loads(text)
    assert config.sites[0].tls
    assert [(w.line, w.key) for w in warnings] == [(line(text, "hosts = "), "sites[0].hosts")] * 2
    assert warnings[0].message.startswith('"192.168.1.20": a client that connects to an address sends no server name')
    assert warnings[1].message.startswith('"10.0.0.20"')
    assert loads(site('["192.168.1.20"]'))[1] == []  # no TLS, nothing to say
