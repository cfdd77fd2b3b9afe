"""``python -m nas_core``: see nas_core.cli."""

import sys

from nas_core.cli import main

if __name__ == "__main__":
    sys.exit(main())
