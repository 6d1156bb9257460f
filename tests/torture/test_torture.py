"""Short kill -9 torture run (about 30 rounds) and a short soak, as pytest tests.

The long runs: tests/torture/torture.py --rounds 1000, tests/torture/soak.py --minutes 10.
"""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def _run(script, *args, timeout):
    import sage_queue

    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(sage_queue.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    r = subprocess.run(
        [sys.executable, os.path.join(HERE, script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    print(r.stdout, r.stderr)
    return r


def test_torture_kill9_rounds():
    r = _run("torture.py", "--rounds", "30", "--seconds", "45", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rounds survived: " in r.stdout and "OK" in r.stdout


def test_soak_short():
    r = _run("soak.py", "--seconds", "8", timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout


def test_ack_torture_kill9_rounds():
    r = _run("ack_torture.py", "--rounds", "30", timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rounds survived: 30" in r.stdout and "OK" in r.stdout
