"""The durable outbox and its jobs: everything that decides whether a citizen gets a message.

It all happens in the database, so that Redis can be lost at any moment (DESIGN.md rules 1-3):
``messages`` (render first, store), ``plan`` (fan-out into delivery rows), ``claim`` (a worker sends
only what it claimed), ``record`` (outcomes, only under the claim), ``reconcile`` (queue again what
Redis lost), ``status`` (what became of a message, cancel), ``jobs`` (the arq worker).
"""

from hub.delivery.claim import Claimed, claim, finish, release, renew_lease
from hub.delivery.jobs import JOB_TIMEOUT, build_workers, drain, plan_message, run_workers, send_batch
from hub.delivery.messages import Draft, create_message, link, render_all
from hub.delivery.plan import PlannedChunk, plan_chunk
from hub.delivery.reconcile import due_for_requeue, messages_to_plan, reconcile
from hub.delivery.record import Recorded, backoff, record
from hub.delivery.states import FINAL, PENDING, STATES, State
from hub.delivery.status import cancel, status, unfinished

__all__ = [
    "FINAL",
    "JOB_TIMEOUT",
    "PENDING",
    "STATES",
    "Claimed",
    "Draft",
    "PlannedChunk",
    "Recorded",
    "State",
    "backoff",
    "build_workers",
    "cancel",
    "claim",
    "create_message",
    "drain",
    "due_for_requeue",
    "finish",
    "link",
    "messages_to_plan",
    "plan_chunk",
    "plan_message",
    "reconcile",
    "record",
    "release",
    "render_all",
    "renew_lease",
    "run_workers",
    "send_batch",
    "status",
    "unfinished",
]
