"""procrastinate's schema (the version installed: procrastinate 3.10)

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from procrastinate.schema import SchemaManager

from picloud.migrations import run_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql(SchemaManager.get_schema())


def downgrade() -> None:
    raise NotImplementedError("PiCloud migrations are forward-only")
