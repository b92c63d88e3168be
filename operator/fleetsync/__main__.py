"""``python -m fleetsync``: the same as the ``fleetsync`` command (worker processes use it)."""

import sys

from fleetsync.cli import main

sys.exit(main())
