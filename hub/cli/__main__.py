"""``python -m hub.cli``: the same as the ``hub`` command."""

import sys

from hub.cli import app

sys.exit(app())
