"""Who may charge: the IdTagInfo answered to Authorize and StartTransaction.

OCPP 1.6 §4.1 (Authorize), §7.2 (AuthorizationStatus): unknown → Invalid,
blocked → Blocked, past its expiry date → Expired, already in as many active
transactions as allowed → ConcurrentTx; otherwise Accepted, with the expiry date
and the parent id tag when they are set.
"""

from __future__ import annotations

from datetime import datetime

from kilowatt.domain.models import AuthorizationStatus, IdTag, IdTagInfo

__all__ = ["decide"]


def decide(tag: IdTag | None, *, now: datetime, active_transactions: int) -> IdTagInfo:
    if tag is None:
        return IdTagInfo(AuthorizationStatus.INVALID)
    status = tag.status
    if status is AuthorizationStatus.ACCEPTED:
        if tag.expiry_date is not None and tag.expiry_date <= now:
            status = AuthorizationStatus.EXPIRED
        elif active_transactions >= tag.max_concurrent_transactions:
            status = AuthorizationStatus.CONCURRENT_TX
    return IdTagInfo(status, expiry_date=tag.expiry_date, parent_id_tag=tag.parent_id_tag)
