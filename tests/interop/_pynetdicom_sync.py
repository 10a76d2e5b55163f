"""Deterministic pause of a pynetdicom requestor's reactor thread (test helper).

pynetdicom's ``send_c_*`` methods keep the association's reactor thread off
the DIMSE queue by clearing ``_reactor_checkpoint`` and spinning until the
reactor's ``_is_paused`` flag reads True.  The reactor sets that flag
*before* it calls ``checkpoint.wait()`` and clears it only *after* the wait
returns::

    self._is_paused = True
    self._reactor_checkpoint.wait()
    self._is_paused = False
    ... dimse.get_msg(block=False) ...   # may take the peer's response

Right after a previous operation set the checkpoint again, the flag can still
read True although the reactor has already left ``wait()``; ``send_c_echo``
then proceeds, and the reactor takes the (fast) response off the queue
("Received unexpected C-ECHO service message") while ``send_c_echo`` waits
for it until the DIMSE timeout (pynetdicom issue #875 reports the same for
C-FIND).

:func:`pause_reactor` closes that window without guessing at timing: it
swaps in a checkpoint that reports when the reactor thread actually enters
``wait()`` while the checkpoint is cleared, and waits for that report.  The
next ``send_c_*`` clears the (already cleared) checkpoint, finds the reactor
paused for real, and sets the checkpoint itself once it has its response.
Uses private attributes of pynetdicom; it does nothing if they are gone.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["pause_reactor"]


class _ObservedCheckpoint(threading.Event):
    """A reactor checkpoint that says when the reactor blocks on it."""

    def __init__(self) -> None:
        super().__init__()
        self.set()  # pynetdicom's checkpoint is set (reactor running) by default
        #: Set by the reactor thread when it calls wait() on the cleared checkpoint.
        self.reactor_blocked = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        # Only the reactor thread waits on its checkpoint.  Once it has seen
        # the checkpoint cleared here, nothing sets it again before the
        # caller of pause_reactor() has finished its operation.
        if not self.is_set():
            self.reactor_blocked.set()
        return super().wait(timeout)


def pause_reactor(assoc: Any, timeout: float = 10.0) -> None:
    """Return once ``assoc``'s reactor thread is blocked on its checkpoint.

    Call right before a ``send_c_*`` method.  The reactor reads
    ``assoc._reactor_checkpoint`` afresh on every loop, so the observed
    checkpoint takes over within one loop of the reactor.
    """
    checkpoint = getattr(assoc, "_reactor_checkpoint", None)
    if checkpoint is None or not hasattr(assoc, "_is_paused"):
        return
    if not isinstance(checkpoint, _ObservedCheckpoint):
        checkpoint = _ObservedCheckpoint()
        assoc._reactor_checkpoint = checkpoint
    checkpoint.reactor_blocked.clear()
    checkpoint.clear()
    if not checkpoint.reactor_blocked.wait(timeout):
        checkpoint.set()
        raise AssertionError(f"pynetdicom's reactor did not pause within {timeout} s")
