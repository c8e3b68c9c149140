"""Test hook for the kill tests: `RELANCE_SENDER_FAILPOINT` makes the process SIGKILL itself
at exactly one point of a send, so a test can restart it and check what a crash there does.

- `after_smtp_250`: the SMTP server answered 250 to the data, the ledger still says `sending`.
- `after_ledger_commit`: the ledger says `sent`, the status event and the offset commit are
  still to come.

Never set it in production: the process dies on the first send that reaches the point.
"""

from __future__ import annotations

import logging
import os
import signal

from relance_sender.services import Failpoint, FailpointHook

log = logging.getLogger("relance_sender")


def kill_at(chosen: Failpoint) -> FailpointHook:
    def hit(point: Failpoint) -> None:
        if point == chosen:
            log.warning("failpoint reached: SIGKILL", extra={"failpoint": point})
            os.kill(os.getpid(), signal.SIGKILL)

    return hit
