"""`homeproxy passwd [USER]`: hash a password for a site's auth users."""

from __future__ import annotations

import sys


def cmd_passwd(user: str | None) -> int:
    """Print the scrypt hash of a password asked twice without echo (or read from stdin). 0 if printed."""
    import getpass

    import tomlkit

    from homeproxy.passwords import hash_password

    if user is not None and (not user or ":" in user):
        print('a user name cannot be empty or contain ":"', file=sys.stderr)
        return 2
    try:
        if sys.stdin.isatty():
            password = getpass.getpass("Password: ")
            if getpass.getpass("Again: ") != password:
                print("the passwords differ; nothing printed", file=sys.stderr)
                return 1
        else:
            password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
        password.encode("utf-8")  # a non-UTF-8 stdin decodes to surrogates, which no browser could send
    except (EOFError, KeyboardInterrupt):
        print("no password given; nothing printed", file=sys.stderr)
        return 1
    except UnicodeError:
        print("the password is not valid UTF-8; nothing printed", file=sys.stderr)
        return 1
    if not password:
        print("the password is empty; nothing printed", file=sys.stderr)
        return 1
    hashed = hash_password(password)
    print(hashed if user is None else tomlkit.dumps({user: hashed}).rstrip("\n"))
    return 0
