"""``python -m livebridge``: the same as the ``livebridge`` command."""

import sys

from livebridge.cli import main

sys.exit(main())
