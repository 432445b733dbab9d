"""``python -m devnet``: the same as ``iexec-devnet``."""

import sys

from devnet.cli import main

sys.exit(main())
