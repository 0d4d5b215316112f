"""scripts.require_key; NOTIFY picloud_scripts on a script's changes; one job-done NOTIFY

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from picloud.migrations import run_sql_file

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0003_scripts_notify.sql")


def downgrade() -> None:
    raise NotImplementedError("PiCloud migrations are forward-only")
