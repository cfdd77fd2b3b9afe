"""``python -m nas_core``: the CLI of :mod:`nas_service.cli`, kept under the engine's name that workers, the
README and users' scripts call. The one import of the service layer from the engine, declared as such in
``.importlinter``."""

import sys

from nas_service.cli import main

if __name__ == "__main__":
    sys.exit(main())
