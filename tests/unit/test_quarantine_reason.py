"""The reason a quarantined event is kept with: useful to an operator, free of personal data."""

from __future__ import annotations

import pytest

from services.platform.quarantine import failure_reason

pytestmark = pytest.mark.unit


def test_the_class_and_message_are_kept():
    assert failure_reason(ZeroDivisionError("division by zero")) == "ZeroDivisionError: division by zero"
    assert failure_reason(RuntimeError()) == "RuntimeError"


def test_quoted_values_addresses_and_long_numbers_are_masked():
    reason = failure_reason(ValueError("cannot link 'Ada Lovelace' <ada@example.org> to +44 7700 900123 (key=42)"))
    assert reason == "ValueError: cannot link … … to … …"
    assert failure_reason(KeyError("secret-name")) == "KeyError: …"


def test_only_the_first_line_cleaned_and_bounded():
    reason = failure_reason(RuntimeError("first line\x00\x1b[2J\nsecond line with data"))
    assert reason == "RuntimeError: first line[2J"
    assert len(failure_reason(RuntimeError("x" * 5000))) == 300
