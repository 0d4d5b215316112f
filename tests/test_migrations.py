"""Migrations: an empty database migrated to head has exactly the declared schema
(procrastinate's schema + ``migrations/schema.sql``), and `picloud db migrate` is idempotent."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from procrastinate.schema import SchemaManager

from picloud.database import current_revision, migrate, migrations_path

CATALOG_QUERIES = {
    "columns": """
        SELECT table_name, column_name, data_type, udt_name, is_nullable, column_default,
               is_identity, identity_generation
        FROM information_schema.columns WHERE table_schema = 'public'
        ORDER BY table_name, column_name""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace
        ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
        ORDER BY 1, 2""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
        FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2""",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid)
        FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1, 2""",
    "types": """
        SELECT t.typname, t.typtype,
               coalesce((SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder)
                         FROM pg_enum WHERE enumtypid = t.oid), ''),
               coalesce((SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, NULL),
                                           ',' ORDER BY a.attnum)
                         FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0), '')
        FROM pg_type t LEFT JOIN pg_class c ON c.oid = t.typrelid
        WHERE t.typnamespace = 'public'::regnamespace
          AND (t.typtype = 'e' OR (t.typtype = 'c' AND c.relkind = 'c'))
        ORDER BY 1""",
    "sequences": """
        SELECT sequence_name, data_type FROM information_schema.sequences
        WHERE sequence_schema = 'public' ORDER BY 1""",
}


def schema_of(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        snapshot = {k: conn.execute(q).fetchall() for k, q in CATALOG_QUERIES.items()}
    # alembic's own bookkeeping table is not part of the declared schema.
    for key, rows in snapshot.items():
        snapshot[key] = [r for r in rows if "alembic_version" not in str(r[:2])]
    return snapshot


def test_migrating_an_empty_database_gives_the_declared_schema(
    make_database: Callable[[], str], admin_url: str
) -> None:
    # make_database() clones the migrated template; start from genuinely empty databases.
    migrated = _empty_database(admin_url, "migrated")
    declared = _empty_database(admin_url, "declared")
    try:
        assert current_revision(migrated) is None
        migrate(migrated)
        assert current_revision(migrated) == "0003"
        with psycopg.connect(declared, autocommit=True) as conn:
            conn.execute(SchemaManager.get_schema().encode())
            conn.execute((migrations_path() / "schema.sql").read_bytes())
        got, want = schema_of(migrated), schema_of(declared)
        for key in CATALOG_QUERIES:
            assert got[key] == want[key], key
        assert any(r[0] == "events" for r in got["columns"])
        assert any(r[0] == "procrastinate_jobs" for r in got["columns"])
    finally:
        _drop(admin_url, "migrated")
        _drop(admin_url, "declared")


def _name(suffix: str) -> str:
    import os

    return f"pt_{os.getpid()}_empty_{suffix}"


def _empty_database(admin_url: str, suffix: str) -> str:
    from picloud.database import with_database

    _drop(admin_url, suffix)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(_name(suffix)))
        )
    return with_database(admin_url, _name(suffix))


def _drop(admin_url: str, suffix: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                psycopg.sql.Identifier(_name(suffix))
            )
        )


def test_migrate_twice_is_a_no_op(database_url: str) -> None:
    before = schema_of(database_url)
    migrate(database_url)
    assert schema_of(database_url) == before
    assert current_revision(database_url) == "0003"


def test_db_migrate_command(make_database: Callable[[], str], tmp_path: Path) -> None:
    url = make_database()
    out = subprocess.run(
        [sys.executable, "-m", "picloud", "db", "migrate", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "0003" in out.stdout


@pytest.mark.parametrize("name", ["schema.sql", "versions/0002_picloud.sql",
                                  "versions/0003_scripts_notify.sql", "env.py"])
def test_migrations_are_packaged(name: str) -> None:
    assert (migrations_path() / name).is_file()
