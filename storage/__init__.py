"""Persistence: SQLModel tables, async engines, queries and Alembic migrations."""
