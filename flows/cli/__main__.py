"""``python -m flows.cli``: the ``tablebatch`` command."""

import sys

from flows.cli import main

sys.exit(main())
