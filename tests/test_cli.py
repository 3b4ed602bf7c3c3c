"""The CLI starts fast and imports no heavy dependency (lazy imports)."""

import subprocess
import sys
import time

HEAVY = ("torch", "transformers", "trl", "peft", "kfp", "prefect", "vllm", "deepspeed", "boto3")


def test_help_is_fast_and_light():
    code = (
        "import sys, srcal.cli\n"
        "try:\n    srcal.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    elapsed = time.time() - t0
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
    assert elapsed < 2.0, f"srcal --help took {elapsed:.2f}s"


def test_bad_override_exits_2_with_the_key(capsys):
    from srcal.cli import main

    assert main(["recipe", "show", "--set", "align.bta=1"]) == 2
    assert "align.bta: unknown key" in capsys.readouterr().err


# --------------------------------------------------------------------------------- errors for people


def _srcal(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "srcal.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("srcal: error:")]


def test_expected_errors_print_one_line_and_exit_2_and_debug_shows_the_traceback(tmp_path):
    r = _srcal("recipe", "show", "--set", "align.bta=1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(_error_lines(r.stderr)) == 1 and "align.bta: unknown key" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("srcal: error:")

    r = _srcal("stage", "no-such-stage", "--output", str(tmp_path / "o"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "unknown stage 'no-such-stage'" in _error_lines(r.stderr)[0]

    r = _srcal("--debug", "recipe", "show", "--set", "align.bta=1")
    assert r.returncode == 1 and "Traceback" in r.stderr and "RecipeError" in r.stderr


def test_an_unexpected_error_keeps_its_traceback(tmp_path):
    """Bugs must stay loud: only the named expected errors are shortened."""
    r = _srcal("stage", "search-merge", "--output", str(tmp_path / "o"))  # ValueError: no shard inputs
    assert r.returncode == 1 and "Traceback" in r.stderr and not _error_lines(r.stderr)


def test_a_data_error_from_eval_is_one_line_naming_the_threshold(tmp_path):
    """A data artifact whose every eval row is bad: DataError (share over data.max_rejected_share)."""
    import json

    from srcal.run import store

    data, model = tmp_path / "d", tmp_path / "m"
    data.mkdir()
    model.mkdir()
    rows = [{"id": f"s{i}", "image": "images/none.png", "question": "q", "answer": "a", "category": "math",
             "source": "t"} for i in range(3)]
    (data / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\xff\n", encoding="latin-1")
    (model / "config.json").write_text("{}")
    store.publish(data, str(tmp_path / "data"), {"resume_key": "x", "stage": "data"})
    store.publish(model, str(tmp_path / "model"), {"resume_key": "x", "stage": "base"})
    r = _srcal("eval", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "data"),
               "--out", str(tmp_path / "out"))
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    (line,) = _error_lines(r.stderr)
    assert "4 of 4 rows rejected" in line and "data.max_rejected_share" in line


# Error classes that stay loud: a per-row error that never leaves its reader, and a crashed vLLM worker
# (a bug or a broken environment, where the traceback is what one needs).
LOUD_ERRORS = {"srcal.data.adapters.RowError", "srcal.serve.vllm_worker.WorkerError"}


def test_every_error_class_of_the_package_is_classified():
    """A new ``class …Error`` must be added to ``cli.EXPECTED_ERRORS`` (one line, exit 2) or to LOUD_ERRORS
    here; and every expected name must exist (a rename would silently bring the traceback back)."""
    import ast
    import importlib
    from pathlib import Path

    from srcal.cli import EXPECTED_ERRORS

    src = Path(__file__).resolve().parents[1] / "src"
    found = set()
    for path in (src / "srcal").rglob("*.py"):
        mod = ".".join(path.relative_to(src).with_suffix("").parts)
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Failed", "Missing", "Architecture")) \
                    and not node.name.startswith("_"):
                found.add(f"{mod}.{node.name}")
    for name in EXPECTED_ERRORS:
        mod, cls = name.rsplit(".", 1)
        assert isinstance(getattr(importlib.import_module(mod), cls), type), name
    def expected(name: str) -> bool:  # subclasses count (preflight.PreflightError is a RecipeError)
        mod, cls = name.rsplit(".", 1)
        mro = getattr(importlib.import_module(mod), cls).__mro__
        return any(f"{c.__module__}.{c.__qualname__}" in EXPECTED_ERRORS for c in mro)

    unclassified = {n for n in found - LOUD_ERRORS if not expected(n)}
    assert not unclassified, f"classify in srcal.cli.EXPECTED_ERRORS or LOUD_ERRORS: {sorted(unclassified)}"


def test_prefect_logs_of_an_expected_error_lose_their_traceback():
    """Under ``srcal run`` Prefect logs a failed task with its traceback before srcal's one line; main()
    filters the traceback out of those records for expected errors only (checked by hand on a real
    ``srcal run`` whose data step fails: 90 lines of stderr with two tracebacks became 10 without any)."""
    import logging

    from srcal.cli import _NoExpectedTracebacks
    from srcal.data.schema import DataError

    def record(exc: BaseException) -> logging.LogRecord:
        try:
            raise exc
        except BaseException:
            return logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())

    quiet, loud = record(DataError("x.jsonl: 4 of 4 rows rejected")), record(ValueError("a bug"))
    assert _NoExpectedTracebacks().filter(quiet) and _NoExpectedTracebacks().filter(loud)
    assert quiet.exc_info is None and "Traceback" not in logging.Formatter().format(quiet)
    assert "Traceback" in logging.Formatter().format(loud)


def test_a_listed_error_reads_as_a_heading_and_its_items():
    """A message whose heading ends in ':' and lists problems below it reads "heading: a; b" on one line."""
    from srcal.cli import error_line
    from srcal.config import RecipeError

    line = error_line(RecipeError("recipe 'x' cannot run (run preflight):\n  model.base: missing\n  teacher.url: empty"))
    assert line.startswith("srcal: error: recipe 'x' cannot run (run preflight): model.base: missing; teacher.url: empty")
    assert error_line(RecipeError("one problem")).startswith("srcal: error: one problem  (")
