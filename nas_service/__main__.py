"""``python -m nas_service``: the CLI (``python -m nas_core`` is the same commands)."""

import sys

from nas_service.cli import main

if __name__ == "__main__":
    sys.exit(main())
