"""Shared fixtures: every test gets a fresh queue folder (SAGE_QUEUE_DIR) under /dev/shm and
unique queue names; queues made through `make_queue` are closed after the test."""

import os
import shutil
import tempfile

import pytest
import sage_queue
from sq_helpers import unique_name

SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None


@pytest.fixture(autouse=True)
def queue_dir(monkeypatch):
    """A fresh, empty queue folder for this test (children inherit it through the env)."""
    path = tempfile.mkdtemp(prefix="sage-queue-test-", dir=SHM)
    monkeypatch.setenv("SAGE_QUEUE_DIR", path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def qname():
    return unique_name()


@pytest.fixture
def make_queue():
    """make_queue(name=None, **kwargs) -> SageQueue, closed at the end of the test."""
    made = []

    def make(name=None, **kwargs):
        q = sage_queue.SageQueue(name or unique_name(), **kwargs)
        made.append(q)
        return q

    yield make
    for q in made:
        q.close()
