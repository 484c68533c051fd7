"""The audit trail's one way in: every change an admin makes, and every safety refusal, is a row
written in the same transaction as what it records."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Insert

from storage.models import AuditEntry, utcnow


def audit_row(
    actor: str, action: str, detail: Mapping[str, Any], at: datetime | None = None
) -> Insert:
    """The INSERT of one audit entry, to execute on the caller's connection."""
    return AuditEntry.__table__.insert().values(  # type: ignore[attr-defined]
        at=at or utcnow(), actor=actor, action=action, detail=dict(detail)
    )
