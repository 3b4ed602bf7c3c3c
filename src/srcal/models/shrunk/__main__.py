"""``python -m srcal.models.shrunk fetch|build``: see :func:`srcal.models.shrunk.build.main`."""

import sys

from srcal.models.shrunk.build import main

raise SystemExit(main(sys.argv[1:]))
