"""The pipeline's patience with the database: a locked or unreachable database is waited for,
then reported in one line; any other database error is not retried."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from monitor.pipeline import patiently
from monitor.store.errors import StoreUnavailable


def test_a_database_locked_past_the_patience_is_one_line() -> None:
    calls: list[float] = []

    def locked() -> None:
        calls.append(time.monotonic())
        raise OperationalError("INSERT", {}, Exception("database is locked\ncontext"))

    with pytest.raises(StoreUnavailable) as raised:
        patiently(0.5, locked)
    assert str(raised.value) == "database busy or unreachable for 0.5 s: database is locked"
    assert len(calls) >= 2, "a locked database is tried again"


def test_a_database_that_answers_again_is_used() -> None:
    answers = iter([OperationalError("SELECT", {}, Exception("server closed")), None])

    def flaky() -> str:
        problem = next(answers)
        if problem is not None:
            raise problem
        return "stored"

    assert patiently(5.0, flaky) == "stored"


def test_other_database_errors_are_not_retried() -> None:
    calls: list[int] = []

    def duplicate() -> None:
        calls.append(1)
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))

    with pytest.raises(IntegrityError):
        patiently(5.0, duplicate)
    assert calls == [1]
