"""``python -m avitalk``: the ``avitalk`` command."""

import sys

from avitalk.top.cli import main

sys.exit(main())
