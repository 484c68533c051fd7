"""Reads and writes of safety rules (bot.safety); every change and every refusal is audited."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.audit import audit_row
from storage.compiled_once import built_once
from storage.engine import reader, write
from storage.models import SafetyRule, utcnow
from storage.rows import from_row


class DuplicateRule(Exception):
    """The workspace already has this rule."""


_RULES = built_once(  # read for every command (behind a short cache): built once
    select(SafetyRule.__table__)
    .where(
        SafetyRule.platform == bindparam("platform"),
        SafetyRule.workspace == bindparam("workspace"),
    )
    .order_by(SafetyRule.id)
)


class SafetyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.reader = reader(engine)

    async def rules(self, platform: str, workspace: str) -> list[SafetyRule]:
        async with self.reader.connect() as conn:
            found = await conn.execute(_RULES, {"platform": platform, "workspace": workspace})
        return [from_row(SafetyRule, row._mapping) for row in found.all()]

    async def add(
        self, platform: str, workspace: str, kind: str, value: str, actor: str
    ) -> SafetyRule:
        now = utcnow()
        try:
            async with write(self.engine) as conn:
                result = await conn.execute(
                    SafetyRule.__table__.insert()
                    .values(
                        platform=platform,
                        workspace=workspace,
                        kind=kind,
                        value=value,
                        created_by=actor,
                        created_at=now,
                    )
                    .returning(SafetyRule.__table__.c.id)
                )
                rule_id = int(result.scalar_one())
                detail = {"platform": platform, "workspace": workspace, "rule": rule_id}
                await conn.execute(
                    audit_row(actor, "safety.add", {**detail, "kind": kind, "value": value}, now)
                )
        except IntegrityError:
            raise DuplicateRule(value) from None
        return SafetyRule(
            id=rule_id,
            platform=platform,
            workspace=workspace,
            kind=kind,
            value=value,
            created_by=actor,
            created_at=now,
        )

    async def remove(self, platform: str, workspace: str, rule_id: int, actor: str) -> bool:
        """Delete one of this workspace's rules; False if it has no such rule.

        One DELETE ... RETURNING, so that of two removals at once (PostgreSQL: both could read
        the row before either deleted it) only the one that deleted it says so and is audited."""
        table = SafetyRule.__table__
        async with write(self.engine) as conn:
            row = (
                await conn.execute(
                    delete(table)
                    .where(
                        table.c.id == rule_id,
                        table.c.platform == platform,
                        table.c.workspace == workspace,
                    )
                    .returning(table.c.kind, table.c.value)
                )
            ).first()
            if row is None:
                return False
            detail = {"platform": platform, "workspace": workspace, "rule": rule_id}
            await conn.execute(
                audit_row(actor, "safety.remove", {**detail, "kind": row.kind, "value": row.value})
            )
        return True

    async def audit(self, actor: str, action: str, detail: Mapping[str, Any]) -> None:
        async with write(self.engine) as conn:
            await conn.execute(audit_row(actor, action, detail))
