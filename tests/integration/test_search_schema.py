"""The search functions' upgrade step (services/platform/schema.py: search_functions) where the
unaccent extension may not be created: a clear error naming what to do, nothing half made."""

from __future__ import annotations

import secrets

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from services.platform import schema

pytestmark = pytest.mark.integration


def test_a_user_who_may_not_create_the_extension_is_told_how(database_url):
    role, password = "r_" + secrets.token_hex(4), secrets.token_hex(8)
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        admin.execute(f"GRANT CREATE ON SCHEMA public TO {role}")
        admin.execute(f"REVOKE CREATE ON DATABASE {admin.info.dbname} FROM PUBLIC")
    try:
        with psycopg.connect(make_conninfo(database_url, user=role, password=password)) as conn:
            with (
                pytest.raises(RuntimeError, match="CREATE EXTENSION unaccent"),
                conn.cursor(row_factory=dict_row) as curs,
            ):
                schema.search_functions(curs, None)
        with psycopg.connect(database_url) as admin:
            found = admin.execute("SELECT to_regprocedure('sb_search_vector(text)') IS NULL").fetchone()[0]
            assert found, "nothing made"
            # Once the owner made the extension, the same user gets the rest.
            admin.execute("CREATE EXTENSION IF NOT EXISTS unaccent")
            admin.commit()
        with psycopg.connect(make_conninfo(database_url, user=role, password=password)) as conn:
            with conn.cursor(row_factory=dict_row) as curs:
                schema.search_functions(curs, None)
                curs.execute("SELECT sb_search_fold('ÁÉÍ') AS folded")
                assert curs.fetchone()["folded"] == "aei"
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")
