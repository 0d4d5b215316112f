"""Alembic migrations of PiCloud's database (installed as the package ``picloud.migrations``).

Each revision runs SQL kept beside it in ``versions/*.sql`` on the raw psycopg connection of
alembic's transaction, so ``%`` and ``:`` in PL/pgSQL need no escaping.
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

VERSIONS = Path(__file__).parent / "versions"


def run_sql(text: str) -> None:
    """Run ``text`` (several statements allowed) in the migration's transaction."""
    driver = op.get_bind().connection.driver_connection
    assert driver is not None
    with driver.cursor() as cur:
        cur.execute(text)  # no parameters: psycopg sends it as-is


def run_sql_file(name: str) -> None:
    run_sql((VERSIONS / name).read_text(encoding="utf-8"))
