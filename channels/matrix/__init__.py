"""Matrix adapter on matrix-nio: rooms for kelurahan offices, direct rooms for citizens.

Why it looks the way it does:

* Every send carries the transaction id ``hub-<delivery_id>`` from one fixed device, so a send retried after
  a crash returns the first event instead of posting twice (DESIGN rule 8, FACTS: txn scope is per device).
* nio would retry a 429 forever; here it gives up at once and the hub's shared pacer obeys "retry after".
* Encrypted rooms need synced room state and a crypto store on disk; a room this process does not know yet
  is synced before the first send to it.
* One device, one process. The crypto store (olm account, megolm sessions, sync token) must never be used
  by two processes at once, and transaction ids only deduplicate within one device. So the process that
  opens the adapter first takes an exclusive lock on ``<store_path>/<device_id>.lock`` (``flock``: the
  kernel drops it the moment that process dies, even on SIGKILL) and owns the device; any other process
  is a standby. A standby answers every item at once with ``RetryLater`` (``standby_retry_seconds``) and
  takes the device over as soon as the lock is free; its ``listen`` waits for the lock. ``ready()`` says
  which one this is, so the hub can leave a standby's items unclaimed instead.
* Direct rooms are remembered in the account's ``m.direct`` data, not in the hub's database, so a restarted
  worker finds the same room for a citizen. Writes of ``m.direct`` are serialised in the owning process;
  a room created just before a crash (not yet in ``m.direct``) is found again by its members.

The package is split by concern: ``channel`` (settings, capabilities, addresses, sending), ``transport``
(the device and its lock, login, room state, ``m.direct``), ``inbound`` (sync, invites, commands),
``html`` (how a message looks), ``errors`` (homeserver errors to outcomes).
"""

from channels.matrix.channel import CHANNEL, MatrixChannel, MatrixSettings
from channels.matrix.errors import DeviceBusy, outcome_for_error, retry_after_seconds
from channels.matrix.html import render
from channels.matrix.inbound import ENGLISH_COMMANDS, parse_command, server_of

__all__ = [
    "CHANNEL",
    "ENGLISH_COMMANDS",
    "DeviceBusy",
    "MatrixChannel",
    "MatrixSettings",
    "outcome_for_error",
    "parse_command",
    "render",
    "retry_after_seconds",
    "server_of",
]
