"""``python -m avitalk.top.cli``."""

import sys

from avitalk.top.cli import main

sys.exit(main())
