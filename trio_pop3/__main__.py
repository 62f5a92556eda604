"""``python -m trio_pop3``: the same as the ``trio-pop3`` command."""

import sys

from ._cli import main

sys.exit(main())
