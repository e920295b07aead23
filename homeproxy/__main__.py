"""`python -m homeproxy` is the `homeproxy` command."""

import sys

from homeproxy.cli import main

sys.exit(main())
