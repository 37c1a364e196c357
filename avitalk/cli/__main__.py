"""``python -m avitalk.cli``."""

import sys

from . import main

sys.exit(main())
