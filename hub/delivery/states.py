"""Delivery states. A state only moves forward (DESIGN.md rule 2)."""

from __future__ import annotations

from enum import StrEnum

from hub.store.models import Delivery


class State(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    RETRYING = "retrying"
    SENT = "sent"
    DELIVERED = "delivered"
    #: The provider reported that the recipient opened it (a read receipt); after ``delivered``.
    READ = "read"
    FAILED = "failed"
    GONE = "gone"
    SKIPPED = "skipped"


#: Waiting for a worker to claim them.
PENDING = (State.QUEUED.value, State.RETRYING.value)
#: Nothing more will happen to these (but a receipt moving ``sent`` to ``delivered`` or ``read``).
FINAL = (
    State.SENT.value,
    State.DELIVERED.value,
    State.READ.value,
    State.FAILED.value,
    State.GONE.value,
    State.SKIPPED.value,
)
STATES = tuple(s.value for s in State)

deliveries = Delivery.__table__
