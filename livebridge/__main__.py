"""``python -m livebridge``: the same as the ``livebridge`` command."""

import sys

from livebridge._cli import main

sys.exit(main())
