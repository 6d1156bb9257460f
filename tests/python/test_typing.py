"""The package is typed (py.typed): examples/typed_usage.py passes ``mypy --strict`` against the
sage_queue these tests import (the installed wheel under run.sh, python/ with PYTHONPATH), and
the public API's types are the real ones, not Any. mypy must be installed (run.sh installs it):
these tests fail, never skip, without it."""

import importlib.util
import os
import re
import subprocess

import sq_helpers as h

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join("examples", "typed_usage.py")


def mypy(*args, timeout=300):
    assert importlib.util.find_spec("mypy") is not None, (
        "mypy is not installed: pip install mypy (run.sh installs it)"
    )
    # From the repository root, so that pyproject.toml's [tool.mypy] applies; python/ is not
    # on mypy's path there unless PYTHONPATH (child_env: this sage_queue) puts it there.
    return subprocess.run(
        [h.python(), "-m", "mypy", *args],
        cwd=REPO,
        env=h.child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_typed_example_passes_mypy_strict():
    res = mypy("--strict", EXAMPLE)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Success: no issues found" in res.stdout


def test_the_typed_example_runs():
    res = subprocess.run(
        [h.python(), EXAMPLE], cwd=REPO, env=h.child_env(), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "the typed example ran" in res.stdout


# expression -> the type mypy must infer (without module prefixes: "builtins.", "sage_queue.x.").
REVEALED = {
    "q.qsize()": "int",
    "q.empty()": "bool",
    "q.join(timeout=1.0)": "bool",
    "q.get_many(max_items=3)": "list[Any]",
    "q.get_stats()": "dict[str, Any]",
    "q.get_reference()": "SageQueueRef",
    "q.maxsize": "int",
    "q.__enter__()": "SageQueue",
    "sage_queue.destroy_queue('x')": "bool",
    "sage_queue.cleanup_invalid_queues()": "list[str]",
    "sage_queue.list_all_sage_queues()": "list[dict[str, Any]]",
    "sage_queue.queue_dir()": "str",
    "sage_queue.max_message_size(4096)": "int",
    "sage_queue.MessageTooLarge(1, 2).max_size": "int",
    "sage_queue.QueueClosed('x').name": "str",
}


def test_the_public_api_has_real_types(tmp_path):
    lines = ["import sage_queue", "q = sage_queue.SageQueue('x')"]
    lines += [f"reveal_type({expr})" for expr in REVEALED]
    src = tmp_path / "reveal.py"
    src.write_text("\n".join(lines) + "\n")
    res = mypy("--strict", str(src))
    revealed = {}
    for line in res.stdout.splitlines():
        m = re.match(r".*reveal\.py:(\d+): note: Revealed type is \"(.*)\"$", line)
        if m:
            kind = re.sub(r"\b(builtins|typing|sage_queue(\.\w+)?)\.", "", m[2])
            revealed[list(REVEALED)[int(m[1]) - 3]] = kind
    assert revealed == REVEALED, res.stdout + res.stderr
