"""``python -m skiff.apiserver``: serve skiff's public API."""

import sys

from skiff.apiserver.server import main

sys.exit(main())
