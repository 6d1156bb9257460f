"""Names, segment files and their lifetime: bad names, oversize items, foreign files, file
mode, the default folder, and no file left once every handle is closed."""

import os
import queue
import time

import pytest
import sage_queue
from sage_queue import (
    InvalidQueueName,
    MessageTooLarge,
    NotAQueueError,
    SageQueue,
)
from sq_helpers import unique_name

BAD_NAMES = ["", "x" * 201, "a/b", "..", ".hidden", "a b", "a\0b", "../escape", "tab\tname"]


def segment_path(queue_dir, name):
    return os.path.join(queue_dir, f"sq-{os.geteuid()}-{name}")


@pytest.mark.parametrize("bad", BAD_NAMES, ids=repr)
def test_bad_names_raise_invalid_queue_name(bad, queue_dir):
    with pytest.raises(InvalidQueueName) as info:
        SageQueue(bad)
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidQueueName):
        sage_queue.destroy_queue(bad)
    with pytest.raises(InvalidQueueName):
        SageQueue("fine", namespace=bad if bad else ".")
    assert os.listdir(queue_dir) == []


def test_longest_name_is_fine(make_queue):
    name = "n" * 200
    q = make_queue(name)
    q.put(1)
    assert q.get() == 1


def test_name_must_be_a_string():
    with pytest.raises(TypeError):
        SageQueue(42)


def test_oversize_item_fails_at_once_without_waiting(make_queue):
    q = make_queue(maxsize=4096, serializer="raw")
    start = time.monotonic()
    with pytest.raises(MessageTooLarge) as info:
        q.put(b"x" * 5000)  # block=True, no timeout: must still fail now
    assert time.monotonic() - start < 2
    err = info.value
    assert isinstance(err, ValueError)
    assert err.size == 5000 and err.max_size == q.max_message_size
    with pytest.raises(MessageTooLarge):
        q.put_many([b"small", b"x" * 5000], timeout=None)
    assert q.qsize() == 0


def test_oversize_pickled_item(make_queue):
    q = make_queue(maxsize=4096)
    with pytest.raises(MessageTooLarge):
        q.put(list(range(5000)))
    assert q.qsize() == 0


def test_largest_message_fits_an_empty_queue(make_queue):
    q = make_queue(maxsize=4096, serializer="raw")
    assert q.max_message_size == sage_queue.max_message_size(4096)
    big = bytes(range(256)) * (q.max_message_size // 256) + b"z" * (q.max_message_size % 256)
    q.put(big, timeout=5)
    assert q.get() == big
    with pytest.raises(MessageTooLarge):
        q.put(big + b"!")


@pytest.mark.parametrize(
    "junk",
    [b"", b"short", b"not a queue at all\n" * 500, b"\0" * 8192],
    ids=["empty", "short", "text", "zeros"],
)
def test_foreign_file_is_rejected_and_left_untouched(junk, queue_dir, qname):
    path = segment_path(queue_dir, qname)
    with open(path, "wb") as f:
        f.write(junk)
    os.chmod(path, 0o600)
    before = os.stat(path)
    for create in (None, False):
        with pytest.raises(NotAQueueError) as info:
            SageQueue(qname, create=create)
        assert isinstance(info.value, ValueError)
    with pytest.raises((NotAQueueError, sage_queue.QueueExists)):
        SageQueue(qname, create=True)
    with pytest.raises(NotAQueueError):
        sage_queue.destroy_queue(qname)
    assert sage_queue.cleanup_invalid_queues() == []
    infos = {i["name"]: i for i in sage_queue.list_all_sage_queues()}
    assert infos[qname]["valid"] is False and infos[qname]["error"]
    with open(path, "rb") as f:
        assert f.read() == junk
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_mode) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_mode,
    )


def test_segment_file_mode_is_0600_and_owned_by_us(make_queue, queue_dir, qname):
    q = make_queue(qname)
    assert q.path == segment_path(queue_dir, qname)
    st = os.stat(q.path)
    assert st.st_mode & 0o777 == 0o600
    assert st.st_uid == os.geteuid()
    info = q.get_shared_memory_info()
    assert info["mode"] == 0o600 and info["owner_uid"] == os.geteuid()
    assert info["path"] == q.path and info["size"] == st.st_size and info["exists"]


def test_default_folder_is_dev_shm(monkeypatch):
    monkeypatch.delenv("SAGE_QUEUE_DIR")
    assert sage_queue.queue_dir() == "/dev/shm"
    name = unique_name("default-dir")
    path = f"/dev/shm/sq-{os.geteuid()}-{name}"
    with SageQueue(name) as q:
        assert q.path == path and os.path.exists(path)
        q.put("x")
        assert q.get() == "x"
    assert not os.path.exists(path)


def test_no_file_left_after_every_handle_closes(queue_dir, qname):
    a = SageQueue(qname)
    b = SageQueue(qname)
    c = b.get_reference().get_queue()
    a.put(1)
    assert c.get() == 1
    a.close()
    b.close()
    assert os.listdir(queue_dir) != []
    c.close()
    assert os.listdir(queue_dir) == []


def test_garbage_collected_handle_detaches(queue_dir, qname):
    q = SageQueue(qname)
    q.put(1)
    del q
    assert os.listdir(queue_dir) == []


def test_auto_cleanup_off_keeps_the_queue(queue_dir, qname):
    q = SageQueue(qname, auto_cleanup=False)
    q.put("kept")
    q.close()
    assert os.listdir(queue_dir) != []
    with SageQueue(qname, create=False) as again:
        assert again.get() == "kept"
    # `again` had auto_cleanup on: the last close removed it.
    assert os.listdir(queue_dir) == []


def test_cleanup_invalid_queues_removes_abandoned_queues(queue_dir, qname):
    q = SageQueue(qname, auto_cleanup=False)
    q.close()
    live = SageQueue(unique_name())
    assert sage_queue.cleanup_invalid_queues() == [qname]
    assert os.listdir(queue_dir) == [os.path.basename(live.path)]
    live.close()
    assert os.listdir(queue_dir) == []


def test_destroy_after_close_removes_by_name(queue_dir, qname):
    keep = SageQueue(qname)
    q = SageQueue(qname)
    q.close()
    q.destroy()
    assert os.listdir(queue_dir) == []
    with pytest.raises(sage_queue.QueueClosed):
        keep.get_nowait()
    keep.close()


def test_reopen_after_destroy_is_a_new_queue(qname):
    with SageQueue(qname) as q:
        q.put("old")
        q.destroy()
    with SageQueue(qname) as q:
        with pytest.raises(queue.Empty):
            q.get_nowait()
