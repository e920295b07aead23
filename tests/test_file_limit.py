"""homeproxy raises its soft open-file limit to the hard one at start (issue 14): with Debian's
default soft limit of 1024 it could hold only about 500 proxied connections."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
from homeproxy.runtime import FILE_LIMIT, raise_open_file_limit
got = raise_open_file_limit()
now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
wanted = min(hard, FILE_LIMIT) if hard != resource.RLIM_INFINITY else FILE_LIMIT
print(got == now == wanted, now, wanted)
"""


def test_the_soft_limit_goes_up_to_the_hard_one() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ok, now, wanted = done.stdout.split()
    assert ok == "True", (now, wanted)
    assert int(now) > 256
