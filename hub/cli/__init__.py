"""The ``hub`` command line (Typer + Rich). Every command has ``--help``.

Errors print one line and exit non-zero; nothing is half-created. One module per group of commands:
``setup`` (database, regions, topics, keys, relay codes), ``people`` (subscribers), ``announcing``
(write, preview, publish, follow), ``processes`` (worker, run, listen, reconcile); ``common`` holds
what they share.
"""

# Each module registers its commands; `hub --help` lists them in this order.
# isort: off
from hub.cli import setup, people, announcing, processes  # noqa: F401
from hub.cli import citizens  # noqa: F401
from hub.cli import secret  # noqa: F401
from hub.cli import users  # noqa: F401
from hub.cli import status, notices, relays  # noqa: F401
from hub.cli import doctor  # noqa: F401

# isort: on
from hub.cli.common import app

__all__ = ["app"]
