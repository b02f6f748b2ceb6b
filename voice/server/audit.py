"""Audit records: every read of call data and every refused credential, as `voice.audit` lines.

Who (`user.id`, `user.roles`), what (`event.action`, `voice.call.id`), whether it was allowed
(`event.outcome`, `event.reason`), when (`@timestamp`) and from where (`client.ip`,
`http.request.id`, added by logs.RequestContext). README "Logs and audit" lists the actions.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voice.server.auth import Principal

log = logging.getLogger("voice.audit")

DATASET = "voice.audit"  # event.dataset of every audit record, to route them apart from the rest


def audit(action: str, outcome: str, who: Principal | None = None, *, call_id: str | None = None,
          reason: str | None = None) -> None:  # fmt: skip
    """Record that `who` did `action` (on `call_id`): outcome "success" or "failure" (`reason`)."""
    extra = {"dataset": DATASET, "action": action, "outcome": outcome, "call_id": call_id,
             "reason": reason}  # fmt: skip
    if action == "authenticate":
        extra["category"] = ["authentication"]  # what SIEM sign-in rules select on
    if who is not None:
        extra.update(user=who.name, roles=[who.role])
    level = logging.INFO if outcome == "success" else logging.WARNING
    by = f" by {who.name}" if who is not None else ""
    on = f" on {call_id}" if call_id else ""
    log.log(level, "%s%s%s: %s%s", action, on, by, outcome, f" ({reason})" if reason else "",
            extra=extra)  # fmt: skip


__all__ = ["DATASET", "audit"]
