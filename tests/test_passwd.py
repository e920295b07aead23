"""`homeproxy passwd`, run for real: `python -m homeproxy passwd` in a subprocess, with stdin
piped, or on a pseudo-terminal (where it must ask twice and echo nothing)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
import tomllib

import pytest

from homeproxy.config.load import parse_config
from homeproxy.passwords import verify_password

#: A ceiling for one subprocess step; never a sleep.
STEP = 30.0


def passwd(*args: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "homeproxy", "passwd", *args],
        input=stdin,
        capture_output=True,
        timeout=STEP,
        check=False,
    )


def test_prints_a_hash_of_one_line_of_stdin() -> None:
    done = passwd(stdin=b"correct horse battery\nsecond line ignored\n")

    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.decode().splitlines()
    assert line.startswith("scrypt$")
    assert verify_password("correct horse battery", line)
    assert not verify_password("correct horse battery\n", line)
    assert b"correct horse" not in done.stdout + done.stderr


def test_keeps_spaces_and_unicode_and_takes_crlf_off() -> None:
    done = passwd(stdin=" pässwörd ✓ \r\n".encode())

    assert done.returncode == 0, done.stderr
    assert verify_password(" pässwörd ✓ ", done.stdout.decode().strip())


def test_with_a_user_prints_a_line_the_config_accepts() -> None:
    done = passwd("alice", stdin=b"s3cret\n")
    odd = passwd("bob smith", stdin=b"other\n")

    assert done.returncode == 0 and odd.returncode == 0
    line = done.stdout.decode().strip()
    assert line.startswith('alice = "scrypt$')
    users = tomllib.loads(line + "\n" + odd.stdout.decode())
    assert verify_password("s3cret", users["alice"]) and verify_password("other", users["bob smith"])
    config_text = (
        '[[sites]]\nname = "app"\nhosts = ["app.test"]\nupstreams = ["http://127.0.0.1:9"]\n'
        f"[sites.auth.users]\n{line}\n{odd.stdout.decode()}"
    )
    config = parse_config(config_text, "test.toml")
    assert dict(config.sites[0].auth.users)["alice"] == users["alice"]


@pytest.mark.parametrize(
    ("args", "stdin", "code", "message"),
    [
        ((), b"", 1, b"empty"),
        ((), b"\n", 1, b"empty"),
        ((), b"\xff\xfe\n", 1, b"UTF-8"),
        (("a:b",), b"pw\n", 2, b"cannot be empty or contain"),
        (("",), b"pw\n", 2, b"cannot be empty or contain"),
    ],
)
def test_bad_input_prints_nothing(args: tuple[str, ...], stdin: bytes, code: int, message: bytes) -> None:
    done = passwd(*args, stdin=stdin)

    assert done.returncode == code
    assert done.stdout == b""
    assert message in done.stderr


def _on_a_terminal(*args: str, answers: list[bytes]) -> tuple[int, bytes]:
    """Run `homeproxy passwd` on a pseudo-terminal, typing `answers` at each prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal, so getpass uses it
        os.execv(sys.executable, [sys.executable, "-m", "homeproxy", "passwd", *args])
    out = b""
    pending = list(answers)
    deadline = time.monotonic() + STEP
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            if pending and out.rstrip().endswith(b":"):
                os.write(fd, pending.pop(0) + b"\n")
                out += b"\n<typed>\n"
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out


def test_on_a_terminal_it_asks_twice_without_echo() -> None:
    code, out = _on_a_terminal("alice", answers=[b"tty secret", b"tty secret"])

    assert code == 0, out
    assert out.count(b"Password:") == 1 and out.count(b"Again:") == 1
    assert b"tty secret" not in out  # never echoed
    line = next(x for x in out.decode().splitlines() if x.startswith("alice = "))
    assert verify_password("tty secret", tomllib.loads(line)["alice"])


def test_on_a_terminal_different_answers_print_nothing() -> None:
    code, out = _on_a_terminal(answers=[b"one", b"two"])

    assert code == 1
    assert b"the passwords differ" in out and b"scrypt$" not in out
