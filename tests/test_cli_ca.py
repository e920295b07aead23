"""`homeproxy ca export|info|trust` for real: `homeproxy.cli.main([...])`, or `python -m homeproxy` in a subprocess.

The CA lives in the data dir the autouse fixture points into tmp_path (or `--ca-dir`). `ca trust`
is only ever run with `--dry-run`, without the update tool, or as an unprivileged user: this
machine's system store is never touched, and the tests check that it was not.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from homeproxy import paths
from homeproxy.certs.ca import LocalCA
from homeproxy.cli import main
from homeproxy.cli.ca import SYSTEM_CA_DIR, SYSTEM_CA_FILE, UPDATE_TOOL

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def ca_dir() -> Path:
    return paths.data_dir() / "ca"


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def python_m(*args: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    """`python -m homeproxy ...` from this checkout, with the test's environment (XDG dirs in tmp_path)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "homeproxy", *args], env=env, timeout=30, check=False, **kwargs
    )


def export(capsys: pytest.CaptureFixture[str], *args: str) -> LocalCA:
    """Make the CA through the CLI, the way a user would first get it."""
    assert main(["ca", "export", "--out", str(paths.data_dir() / "root.crt"), *args]) == 0
    capsys.readouterr()
    return LocalCA.open(paths.data_dir() / "ca", create=False)


def system_store() -> dict[str, bytes]:
    """What `ca trust` would change: the files of the system CA directory."""
    if not SYSTEM_CA_DIR.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in sorted(SYSTEM_CA_DIR.iterdir()) if p.is_file()}


# --- ca info ------------------------------------------------------------------------------


def test_info_without_a_ca_says_how_to_make_one(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ca", "info"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"no local CA yet in {ca_dir}: it is made when the first site with tls = true (internal issuer) "
        "starts, or run `homeproxy ca export` to make it now\n"
    )
    assert not ca_dir.exists()  # info only reads


def test_info_prints_the_fingerprint_subject_and_files(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = export(capsys)
    assert main(["ca", "info"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "homeproxy local CA"
    assert f"  SHA-256:       {ca.fingerprint()}" in lines
    der = (ca_dir / "root.crt").read_bytes()
    digest = hashlib.sha256(x509.load_pem_x509_certificate(der).public_bytes(serialization.Encoding.DER)).hexdigest()
    assert ca.fingerprint().replace(":", "").lower() == digest
    assert f"  subject:       {ca.root.subject.rfc4514_string()}" in lines
    start, end = ca.root.not_valid_before_utc, ca.root.not_valid_after_utc
    assert f"  valid:         {start:%Y-%m-%d} to {end:%Y-%m-%d} (UTC)" in lines
    assert any(line.startswith("  vouches for:   names under .home.arpa, .internal, .local") for line in lines)
    assert f"  intermediate:  {ca.intermediate.subject.rfc4514_string()}" in lines
    for name in ("root.crt", "root.key", "intermediate.crt", "intermediate.key"):
        assert any(line.endswith(f"  {ca_dir / name}") for line in lines), name
    assert "  download path: /.well-known/homeproxy/root.crt (also root.der, and root.mobileconfig for iOS)" in lines
    assert "Install the ROOT" in out
    # nothing of a key: not its PEM, not its base64 body
    assert "PRIVATE KEY" not in out
    for key_file in ("root.key", "intermediate.key"):
        body = "".join((ca_dir / key_file).read_text().splitlines()[1:-1])
        assert body[:40] not in out
    assert err == ""


def test_info_lists_download_urls_for_the_listen_addresses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export(capsys)
    cfg = tmp_path / "config.toml"
    cfg.write_text('[server]\nlisten = ["127.0.0.1", "192.168.77.5", "fd00::5", "::1"]\nhttp_port = 8081\n')
    assert main(["ca", "info", "--config", str(cfg)]) == 0
    lines = capsys.readouterr().out.splitlines()
    urls = [line.strip() for line in lines if "http://" in line]
    assert urls == [
        "http://192.168.77.5:8081/.well-known/homeproxy/root.crt",
        "http://[fd00::5]:8081/.well-known/homeproxy/root.crt",
    ]


def test_info_port_80_has_no_port_in_the_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export(capsys)
    cfg = tmp_path / "config.toml"
    cfg.write_text('[server]\nlisten = ["10.1.2.3"]\nhttp_port = 80\n')
    assert main(["--config", str(cfg), "ca", "info"]) == 0  # --config before the subcommand works too
    assert "http://10.1.2.3/.well-known/homeproxy/root.crt" in capsys.readouterr().out


def test_info_says_when_the_root_is_not_served(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export(capsys)
    cfg = tmp_path / "config.toml"
    cfg.write_text('[server]\nlisten = ["10.1.2.3"]\n\n[tls]\nserve_root = false\n')
    assert main(["ca", "info", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "not served: [tls] serve_root = false" in out
    assert "http://" not in out


def test_info_with_a_broken_config_still_shows_the_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = export(capsys)
    cfg = tmp_path / "config.toml"
    cfg.write_text("[tls]\nissuer = 'letsencrypt'\n")
    assert main(["ca", "info", "--config", str(cfg)]) == 0
    out, err = capsys.readouterr()
    assert ca.fingerprint() in out
    assert err == f"{cfg} has errors (`homeproxy check`); showing the default port\n"


def test_info_with_a_broken_root(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export(capsys)
    (ca_dir / "root.crt").write_text("garbage\n")
    assert main(["ca", "info"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("the local CA cannot be used: ") and str(ca_dir / "root.crt") in err


def test_ca_without_a_subcommand_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ca"]) == 2
    assert "usage: homeproxy ca {export,info,trust}" in capsys.readouterr().err


# --- ca export ----------------------------------------------------------------------------


def test_export_to_stdout_makes_the_ca_and_writes_only_the_root(
    ca_dir: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert main(["ca", "export"]) == 0
    out, err = capsysbinary.readouterr()
    ca = LocalCA.open(ca_dir, create=False)
    assert out == ca.root_pem()
    assert b"PRIVATE KEY" not in out
    assert err.decode() == f"made a new local CA in {ca_dir} (root SHA-256 {ca.fingerprint()})\n"
    assert mode(ca_dir) == 0o700
    assert mode(ca_dir / "root.key") == mode(ca_dir / "intermediate.key") == 0o600
    # again: the same root, and nothing said about making one
    assert main(["ca", "export"]) == 0
    again, err = capsysbinary.readouterr()
    assert again == out and err == b""


def test_export_out_file_is_0644_whatever_the_umask(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "root.crt"
    out.write_bytes(b"old")
    out.chmod(0o600)
    old_umask = os.umask(0o077)
    try:
        assert main(["ca", "export", "--out", str(out)]) == 0
    finally:
        os.umask(old_umask)
    ca = LocalCA.open(ca_dir, create=False)
    assert mode(out) == 0o644
    assert out.read_bytes() == ca.root_pem()
    assert b"PRIVATE KEY" not in out.read_bytes()
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    assert cert == ca.root and cert.subject == cert.issuer
    stdout, err = capsys.readouterr()
    assert stdout == ""
    assert err.splitlines()[-1] == f"wrote the root certificate (PEM, SHA-256 {ca.fingerprint()}) to {out}"


def test_export_der_to_a_file(ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "root.der"
    assert main(["ca", "export", "--der", "-o", str(out)]) == 0
    ca = LocalCA.open(ca_dir, create=False)
    assert out.read_bytes() == ca.root_der()
    assert x509.load_der_x509_certificate(out.read_bytes()) == ca.root
    assert mode(out) == 0o644
    assert f"(DER, SHA-256 {ca.fingerprint()}) to {out}" in capsys.readouterr().err


def test_export_der_to_a_pipe(ca_dir: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["ca", "export", "--der"]) == 0
    assert capsysbinary.readouterr().out == LocalCA.open(ca_dir, create=False).root_der()


def test_export_der_to_a_terminal_is_refused(tmp_path: Path) -> None:
    """A real pseudo-terminal as stdout: binary would garble it, so nothing is written or made."""
    main_fd, terminal = os.openpty()
    try:
        result = python_m(
            "ca", "export", "--der", "--ca-dir", str(tmp_path / "ca"), stdout=terminal, stderr=subprocess.PIPE
        )
    finally:
        os.close(terminal)
        os.close(main_fd)
    assert result.returncode == 2
    assert result.stderr.decode() == "DER is binary and would garble the terminal: use --out FILE, or redirect stdout\n"
    assert not (tmp_path / "ca").exists()


def test_export_into_a_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "no" / "such" / "root.crt"
    assert main(["ca", "export", "--out", str(out)]) == 1
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"{out}: cannot write (")
    assert not out.exists()


def test_export_with_the_ca_dir_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "elsewhere"
    out = tmp_path / "root.pem"
    assert main(["ca", "export", "--ca-dir", str(directory), "--out", str(out)]) == 0
    assert out.read_bytes() == (directory / "root.crt").read_bytes()
    assert not (paths.data_dir() / "ca").exists()
    capsys.readouterr()
    assert main(["ca", "info", "--ca-dir", str(directory)]) == 0
    assert f"  {directory / 'root.crt'}" in capsys.readouterr().out


def test_export_never_replaces_a_root_that_lost_its_key(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export(capsys)
    root = (ca_dir / "root.crt").read_bytes()
    (ca_dir / "root.key").unlink()
    assert main(["ca", "export"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("the local CA cannot be used: ") and "root.key is missing" in err
    assert (ca_dir / "root.crt").read_bytes() == root


def test_export_then_info_in_subprocesses(ca_dir: Path, tmp_path: Path) -> None:
    """The same through `python -m homeproxy`, inheriting the test's data dir."""
    out = tmp_path / "root.crt"
    made = python_m("ca", "export", "--out", str(out), capture_output=True)
    assert made.returncode == 0, made.stderr
    ca = LocalCA.open(ca_dir, create=False)
    assert out.read_bytes() == ca.root_pem()
    info = python_m("ca", "info", capture_output=True)
    assert info.returncode == 0, info.stderr
    assert f"SHA-256:       {ca.fingerprint()}" in info.stdout.decode()


# --- ca trust (never for real on this machine) --------------------------------------------


@pytest.mark.skipif(shutil.which(UPDATE_TOOL) is None, reason=f"{UPDATE_TOOL} is not installed")
def test_trust_dry_run_says_what_it_would_do_and_changes_nothing(
    ca_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = export(capsys)
    before = system_store()
    assert main(["ca", "trust", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert system_store() == before
    lines = out.splitlines()
    assert lines[0] == f"root certificate: {ca_dir / 'root.crt'} (SHA-256 {ca.fingerprint()})"
    if SYSTEM_CA_FILE.exists() and SYSTEM_CA_FILE.read_bytes() == ca.root_pem():  # pragma: no cover
        assert lines[1] == f"{SYSTEM_CA_FILE} already holds this root; would run {UPDATE_TOOL} again"
    else:
        assert lines[1].startswith(f"would copy it to {SYSTEM_CA_FILE} (mode 0644)")
        assert lines[2] == f"would run: {shutil.which(UPDATE_TOOL)}"
    assert f"to undo: sudo rm {SYSTEM_CA_FILE} && sudo {UPDATE_TOOL} --fresh" in lines
    assert lines[-1] == "dry run: nothing was changed"
    assert err == ""


@pytest.mark.skipif(shutil.which(UPDATE_TOOL) is None, reason=f"{UPDATE_TOOL} is not installed")
def test_trust_without_a_ca_names_the_sudo_users_directory(
    ca_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user = pwd.getpwuid(os.getuid()).pw_name
    monkeypatch.setenv("SUDO_USER", user)
    assert main(["ca", "trust", "--dry-run"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"no local CA yet in {ca_dir}: ")
    home = Path(pwd.getpwnam(user).pw_dir)
    assert f"{user}'s is --ca-dir {home / '.local/share/homeproxy/ca'})" in err
    assert not ca_dir.exists()


def test_trust_without_the_update_tool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    export(capsys)
    before = system_store()
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert main(["ca", "trust", "--dry-run"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"cannot trust the root here: {UPDATE_TOOL} is not installed")
    assert err.rstrip().endswith("Nothing was changed.")
    assert system_store() == before


#: Imports as the test's user (the interpreter may live under /root), then becomes `nobody` for real.
AS_NOBODY = """
import os, sys
from homeproxy.cli import main
if os.geteuid() == 0:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
assert os.geteuid() != 0, "still root: refusing to run a real trust"
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(shutil.which(UPDATE_TOOL) is None, reason=f"{UPDATE_TOOL} is not installed")
def test_trust_as_an_ordinary_user_needs_root(capsys: pytest.CaptureFixture[str]) -> None:
    """Refused before anything is read or written; run as `nobody` when the tests run as root."""
    ca = export(capsys)
    before = system_store()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", AS_NOBODY, "ca", "trust", "--ca-dir", str(ca.directory)]
    result = subprocess.run(command, env=env, capture_output=True, timeout=30, check=False)
    assert system_store() == before
    assert result.returncode == 1, result.stderr
    err = result.stderr.decode()
    assert err.startswith(f"cannot trust the root: writing {SYSTEM_CA_FILE} needs root. Run: sudo homeproxy ca trust")
    assert f"--ca-dir {ca.directory}" in err and "Nothing was changed" in err
    assert result.stdout == b""
