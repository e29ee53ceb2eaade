"""``python -m kitaru.integrations.fastapi MODULE...``: the same as ``kitaru serve``."""

import sys

from ._serve import main

sys.exit(main())
