"""Permissions and file-system safety, checked with a second, unprivileged user.

As root, the test creates the system user ``sqtest`` if it is missing and runs child Pythons as
that user (``setpriv --reuid --regid --clear-groups``). Skipped (with the reason) when not
root or when useradd/setpriv are missing. The child imports a copy of the sage_queue package
in a folder every user can read (the installed package may live under a private home).
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap

import pytest
import sage_queue
from sage_queue import SageQueue

USER = "sqtest"

CHILD = textwrap.dedent(
    r"""
    import json, os, sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import sage_queue
    from sage_queue import SageQueue

    def attempt(fn):
        try:
            fn()
            return "ok"
        except Exception as e:  # report the exception type by name
            return type(e).__name__

    def opener(name, **kw):
        def f():
            q = SageQueue(name, 4096, serializer="raw", **kw)
            q.close()
        return f

    def read_file(path):
        def f():
            with open(path, "rb") as fh:
                fh.read(1)
        return f

    def write_file(path):
        def f():
            with open(path, "r+b") as fh:
                fh.write(b"x")
        return f

    def own_queue():
        q = SageQueue("mine", 8192, serializer="raw", auto_cleanup=False)
        q2 = SageQueue("mine", create=False, serializer="raw", auto_cleanup=False)
        q.put(b"hello")
        assert q2.get(timeout=1) == b"hello"
        st = os.stat(q.path)
        info = dict(uid=st.st_uid, mode=stat.S_IMODE(st.st_mode), path=q.path)
        q2.close()
        q.destroy()
        return info

    import stat
    cmd = json.loads(sys.argv[1])
    out = {}
    for key, (kind, arg, kw) in cmd.items():
        if kind == "open":
            out[key] = attempt(opener(arg, **kw))
        elif kind == "read":
            out[key] = attempt(read_file(arg))
        elif kind == "write":
            out[key] = attempt(write_file(arg))
        elif kind == "own":
            out[key] = own_queue()
        elif kind == "uid":
            out[key] = os.geteuid()
    print(json.dumps(out))
    """
)


def _need_root():
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux only")
    if os.geteuid() != 0:
        pytest.skip("needs root, to create and switch to a second user")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is missing")


@pytest.fixture(scope="module")
def other():
    """(uid, gid, python, child script) of the second user."""
    _need_root()
    import pwd

    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        if shutil.which("useradd") is None:
            pytest.skip("useradd is missing, cannot create the second user")
        subprocess.run(["useradd", "--system", "--no-create-home", USER], check=True)
        pw = pwd.getpwnam(USER)
    # A copy of the package (pure Python + the native library) that the user can read.
    pkgdir = tempfile.mkdtemp(prefix="sq-perm-pkg-")
    os.chmod(pkgdir, 0o755)
    src = os.path.dirname(os.path.abspath(sage_queue.__file__))
    shutil.copytree(
        src, os.path.join(pkgdir, "sage_queue"), ignore=shutil.ignore_patterns("__pycache__")
    )
    script = os.path.join(pkgdir, "child.py")
    with open(script, "w") as f:
        f.write(CHILD)
    for root, dirs, files in os.walk(pkgdir):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
        for fn in files:
            os.chmod(os.path.join(root, fn), 0o644 if not fn.endswith(".so") else 0o755)
    base = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"]
    python = None
    for cand in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if (
            cand
            and subprocess.run(base + [cand, "-c", "import ctypes"], capture_output=True).returncode
            == 0
        ):
            python = cand
            break
    if python is None:
        shutil.rmtree(pkgdir, ignore_errors=True)
        pytest.skip(f"no Python interpreter that user {USER} can run")
    yield pw.pw_uid, pw.pw_gid, base + [python, script]
    shutil.rmtree(pkgdir, ignore_errors=True)


@pytest.fixture
def shared(monkeypatch):
    """A sticky world-writable queue folder (like /dev/shm), used by both users."""
    d = tempfile.mkdtemp(prefix="sq-perm-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.chmod(d, 0o1777)
    monkeypatch.setenv("SAGE_QUEUE_DIR", d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run_child(other, shared, cmd):
    env = {"SAGE_QUEUE_DIR": shared, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    r = subprocess.run(
        other[2] + [json.dumps(cmd)], capture_output=True, text=True, env=env, timeout=60, cwd="/"
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def snapshot(path):
    st = os.lstat(path)
    data = None
    if stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            data = f.read()
    elif stat.S_ISLNK(st.st_mode):
        data = os.readlink(path)
    return (
        stat.S_IFMT(st.st_mode),
        stat.S_IMODE(st.st_mode),
        st.st_uid,
        st.st_size,
        st.st_mtime_ns,
        st.st_ino,
        data,
    )


def valid_segment_bytes(shared, name="template"):
    q = SageQueue(name, 4096, serializer="raw", auto_cleanup=False)
    q.put(b"payload")
    with open(q.path, "rb") as f:
        data = f.read()
    q.destroy()
    return data


REFUSED = {"QueuePermissionError", "NotAQueueError", "IncompatibleQueue"}


def test_other_user_cannot_touch_a_0600_queue(other, shared):
    uid = other[0]
    q = SageQueue("secret", 4096, serializer="raw", auto_cleanup=False)  # default mode 0600
    q.put(b"top secret")
    assert stat.S_IMODE(os.stat(q.path).st_mode) == 0o600
    before = snapshot(q.path)
    # The other user's name lookup is its own file: sq-<its uid>-secret, which does not exist.
    # Root plants, under the other user's segment names, a hard link to its segment and a
    # symlink to it.
    hard = os.path.join(shared, f"sq-{uid}-hardlink")
    soft = os.path.join(shared, f"sq-{uid}-symlink")
    os.link(q.path, hard)
    os.symlink(q.path, soft)
    res = run_child(
        other,
        shared,
        {
            "uid": ["uid", None, {}],
            "by_name": ["open", "secret", {"create": False}],
            "hard": ["open", "hardlink", {"create": False}],
            "hard_or_create": ["open", "hardlink", {}],
            "soft": ["open", "symlink", {"create": False}],
            "soft_or_create": ["open", "symlink", {}],
            "read": ["read", q.path, {}],
            "write": ["write", q.path, {}],
        },
    )
    assert res.pop("uid") == uid
    assert res.pop("by_name") == "QueueNotFound"
    assert res.pop("read") == "PermissionError"
    assert res.pop("write") == "PermissionError"
    for k, v in res.items():
        assert v in REFUSED, (k, v)
    os.unlink(hard)
    os.unlink(soft)
    assert snapshot(q.path) == before
    assert q.get(timeout=1) == b"top secret"
    q.destroy()


def test_root_owned_world_writable_segment_is_refused(other, shared):
    """Even a valid segment the other user may open at the OS level (mode 0666) is refused,
    because it belongs to another uid; the file is not modified."""
    uid = other[0]
    data = valid_segment_bytes(shared)
    path = os.path.join(shared, f"sq-{uid}-planted")
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o666)
    before = snapshot(path)
    res = run_child(
        other,
        shared,
        {
            "open": ["open", "planted", {"create": False}],
            "open_or_create": ["open", "planted", {}],
            "create": ["open", "planted", {"create": True}],
        },
    )
    assert res["open"] == "QueuePermissionError", res
    assert res["open_or_create"] == "QueuePermissionError", res
    assert res["create"] == "QueueExists", res
    assert snapshot(path) == before


@pytest.mark.parametrize(
    "bad", ["../x", "a/b", "..", ".", ".hidden", "x/../../etc", "/etc/passwd", "", "a\0b", "a b"]
)
def test_names_never_leave_the_queue_dir(shared, bad):
    with pytest.raises(sage_queue.InvalidQueueName):
        SageQueue(bad, 4096)
    with pytest.raises(sage_queue.InvalidQueueName):
        SageQueue("ok", 4096, namespace=bad if bad else "../y")
    assert os.listdir(shared) == []


def test_names_never_leave_the_queue_dir_other_user(other, shared):
    bads = ["../x", "a/b", "..", "x/../../etc", "/tmp/x"]
    res = run_child(other, shared, {b: ["open", b, {}] for b in bads})
    assert all(v == "InvalidQueueName" for v in res.values()), res
    assert os.listdir(shared) == []


def _plant_targets(shared):
    """A regular file outside the queue folder, and a dangling-target path."""
    outside = tempfile.mkdtemp(prefix="sq-perm-target-")
    os.chmod(outside, 0o755)
    target = os.path.join(outside, "target")
    with open(target, "wb") as f:
        f.write(b"do not touch\n" * 100)
    os.chmod(target, 0o666)
    return outside, target, os.path.join(outside, "not-yet")


def test_symlink_at_segment_path_is_never_followed(shared):
    outside, target, dangling = _plant_targets(shared)
    try:
        before = snapshot(target)
        os.symlink(target, os.path.join(shared, "sq-0-victim"))
        os.symlink(dangling, os.path.join(shared, "sq-0-dangling"))
        for kw in ({"create": False}, {}, {"create": True}):
            with pytest.raises(
                (sage_queue.NotAQueueError, sage_queue.QueueExists, sage_queue.QueuePermissionError)
            ):
                SageQueue("victim", 4096, **kw)
            with pytest.raises(
                (sage_queue.NotAQueueError, sage_queue.QueueExists, sage_queue.QueuePermissionError)
            ):
                SageQueue("dangling", 4096, **kw)
        assert snapshot(target) == before
        assert not os.path.lexists(dangling)
        assert os.path.islink(os.path.join(shared, "sq-0-victim"))
        assert os.path.islink(os.path.join(shared, "sq-0-dangling"))
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def test_symlink_planted_by_other_user_at_roots_segment_path(other, shared):
    """The other user plants symlinks under root's segment names (the attack /dev/shm allows):
    root's open, open_or_create and create never follow them."""
    outside, target, dangling = _plant_targets(shared)
    try:
        before = snapshot(target)
        uid, gid = other[0], other[1]
        plant = other[2][:4] + ["/bin/ln", "-s"]  # setpriv ... ln -s
        subprocess.run(plant + [target, os.path.join(shared, "sq-0-victim")], check=True)
        subprocess.run(plant + [dangling, os.path.join(shared, "sq-0-dangling")], check=True)
        assert os.lstat(os.path.join(shared, "sq-0-victim")).st_uid == uid
        for name in ("victim", "dangling"):
            for kw in ({"create": False}, {}, {"create": True}):
                with pytest.raises(sage_queue.SageQueueError) as ei:
                    SageQueue(name, 4096, **kw)
                assert not isinstance(ei.value, sage_queue.QueueNotFound) or name == "dangling"
        assert snapshot(target) == before
        assert not os.path.lexists(dangling)
        del gid
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def _invalid_files(valid):
    import random

    rng = random.Random(6)
    yield "empty", b""
    yield "zeros", b"\0" * 8192
    yield "text", b"hello, this is not a queue\n"
    yield "random", rng.randbytes(12288)
    yield "truncated-header", valid[:100]
    yield "truncated-ring", valid[: len(valid) - 1024]
    yield "longer", valid + b"\0" * 4096
    bad_magic = bytearray(valid)
    bad_magic[0] ^= 0xFF
    yield "bad-magic", bytes(bad_magic)
    # Header fields after the magic (not 48: the `closed` word, which leaves a valid segment).
    for off in (8, 12, 16, 24, 32, 40, 56):
        m = bytearray(valid)
        m[off] ^= 0x5A
        yield f"flip-{off}", bytes(m)


def test_invalid_files_are_never_modified(shared):
    valid = valid_segment_bytes(shared)
    for label, data in _invalid_files(valid):
        path = os.path.join(shared, f"sq-0-bad-{label}")
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o600)
        before = snapshot(path)
        for kw in ({"create": False}, {}):
            try:
                q = SageQueue(f"bad-{label}", 4096, serializer="raw", auto_cleanup=False, **kw)
            except sage_queue.SageQueueError as e:
                # (a set `closed` word reads as an unlinked queue: QueueNotFound)
                assert isinstance(
                    e,
                    (
                        sage_queue.NotAQueueError,
                        sage_queue.IncompatibleQueue,
                        sage_queue.QueueNotFound,
                    ),
                ), (label, e)
            else:
                # A header-field flip may still describe a consistent segment (e.g. a counter):
                # then it is a queue, and this is not the check for it.
                q.close()
                continue
            assert snapshot(path) == before, label
    sage_queue.cleanup_invalid_queues  # noqa: B018 (removal of invalid files is its own API)


def test_other_users_invalid_file_under_roots_name_is_not_modified(other, shared):
    """A file of the other user named as root's segment: root refuses it, never modifies it."""
    path = os.path.join(shared, "sq-0-theirs")
    subprocess.run(
        other[2][:4] + ["/bin/sh", "-c", f"printf junk > {path}; chmod 666 {path}"], check=True
    )
    before = snapshot(path)
    for kw in ({"create": False}, {}):
        with pytest.raises((sage_queue.QueuePermissionError, sage_queue.NotAQueueError)):
            SageQueue("theirs", 4096, **kw)
    assert snapshot(path) == before


def test_other_user_uses_its_own_queues(other, shared):
    q = SageQueue("mine", 4096, serializer="raw", auto_cleanup=False)  # root's "mine"
    q.put(b"root's")
    res = run_child(other, shared, {"own": ["own", None, {}]})
    info = res["own"]
    assert info["uid"] == other[0]
    assert info["mode"] == 0o600
    assert os.path.basename(info["path"]) == f"sq-{other[0]}-mine"
    assert q.get(timeout=1) == b"root's"
    q.destroy()
