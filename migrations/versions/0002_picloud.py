"""PiCloud's tables: the event store, the read model, API tokens, the job-done trigger

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from picloud.migrations import run_sql_file

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0002_picloud.sql")


def downgrade() -> None:
    raise NotImplementedError("PiCloud migrations are forward-only")
