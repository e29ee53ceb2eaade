"""``python -m kitaru.integrations.fastapi MODULE...``: the same as ``kitaru serve``."""

import sys

from ..._cli._serve import main

__all__ = ("main",)

if __name__ == "__main__":
    sys.exit(main())
