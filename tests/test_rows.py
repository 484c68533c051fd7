"""storage.rows.from_row: the same model instance as pydantic's validation, without its cost."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from storage.engine import create_engine
from storage.jobs import JobStore
from storage.models import Job, utcnow
from storage.rows import from_row, new_row
from tests.test_storage import make_job


async def test_a_job_from_its_row_equals_the_validated_one_and_stays_settable(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    try:
        job = Job(
            id="rowjob1",
            platform="slack",
            workspace="T1",
            channel="C1",
            user_id="U1",
            user_name="ada",
            request_key="rowjob1-key",
            command="imagine",
            model="flux-schnell",
            model_ref="black-forest-labs/flux-schnell",
            usage_period="2026-12",
            prompt="a cat",
            input={"prompt": "a cat", "num_outputs": 2},
            destination={"channel": "C1", "ts": "1.2"},
            status="processing",
            status_rank=2,
            estimated_micros=6000,
            started_at=utcnow(),
        )
        await JobStore(engine).reserve_and_insert(job, [])
        async with engine.connect() as conn:
            row = (await conn.execute(select(Job.__table__))).one()
        validated, built = Job.model_validate(dict(row._mapping)), from_row(Job, row._mapping)
        assert built.model_dump() == validated.model_dump() == job.model_dump()
        assert {k: type(v) for k, v in vars(built).items() if not k.startswith("_")} == {
            k: type(v) for k, v in vars(validated).items() if not k.startswith("_")
        }
        assert built.started_at is not None and built.started_at.tzinfo is not None
        built.status = "succeeded"  # instrumented as any table model
        assert built.job_status.terminal
    finally:
        await engine.dispose()


def test_a_new_row_is_the_constructors_with_fresh_defaults() -> None:
    now = utcnow()
    given = {  # what the constructor was given
        **make_job("newrow1").model_dump(exclude_unset=True),
        "created_at": now,
        "updated_at": now,
    }
    built, constructed = new_row(Job, **given), Job(**given)
    assert built.model_dump() == constructed.model_dump()
    assert built.model_fields_set == constructed.model_fields_set == set(given)
    other = new_row(Job, **{**given, "id": "newrow2"})
    assert other.holds is not built.holds and other.destination is not built.destination
    built.status = "processing"  # settable as any loaded row
    assert built.model_dump()["status"] == "processing"
    with pytest.raises(TypeError, match="Job needs a value for platform"):
        new_row(Job, id="newrow3")


def test_a_plain_mutable_default_is_refused_rather_than_shared_between_rows() -> None:
    from sqlmodel import SQLModel

    class Tagged(SQLModel):
        tags: list[str] = []

    with pytest.raises(TypeError, match=r"Tagged\.tags: give a mutable default as default_factory"):
        new_row(Tagged)  # type: ignore[type-var]
