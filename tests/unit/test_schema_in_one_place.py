"""The platform's DDL lives in services/platform/schema.py; read models keep theirs with their projection."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.platform import schema

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DDL = re.compile(r"\b(?:CREATE\s+(?:UNIQUE\s+)?(?:TABLE|INDEX)\s+IF\s+NOT\s+EXISTS|ALTER\s+TABLE)\s+(\w+)", re.I)


def test_no_module_but_schema_creates_or_alters_a_platform_table():
    offenders = []
    for package in ("services", "channels", "projections", "events"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "services/platform/schema.py":
                continue
            for name in DDL.findall(path.read_text()):
                if not name.startswith("proj_"):
                    offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []


def test_every_platform_statement_is_idempotent():
    for ddl in schema.PLATFORM_TABLES:
        for statement in filter(str.strip, re.sub(r"--[^\n]*", "", ddl).split(";")):
            assert re.match(r"\s*CREATE (TABLE|INDEX) IF NOT EXISTS sb_\w+ ", statement), statement
