"""Fixtures of the engine tests that several files share."""

import pytest

from tests.engine.test_worker import WorkerUnderTest


@pytest.fixture(scope="module")
def worker():
    """One real worker process for a whole test file (test_worker.py has its own, one per test)."""
    process = WorkerUnderTest()
    assert process.next()["type"] == "hello"
    yield process
    process.close()
