"""``srcal run``: the whole SRC method, locally, as a resumable Prefect flow over the stage functions.

The flow only *wires* stages; every step is ``srcal.stages.execute(name, recipe, inputs, output, ...)`` —
the very call a KFP component makes — so there is no second implementation of any stage here. What
this module adds is what a local orchestrator is for:

* **the plan** (:func:`plan_run`): :func:`srcal.graph.build_plan` — the one description of the method that
  the Kubeflow pipeline is built from too — expanded into local steps with their run-directory layout
  (docs/architecture.md)::

      data/  base/  rft/  rscorer/search/  rscorer/data/  rscorer/judge/
      round1/search/  round1/score/  round1/curate/  round1/align/   (… round2/, round3/)
      eval/base/  eval/rft/  eval/round1/ …   report/
      metrics.json  report.md  report.html    (copied out of report/)

  Round k searches with round k−1's policy (round 1: the RFT model) and trains round k's policy, which
  is referenced to round k−1's (srcal.align);
* **resume**: ``execute`` skips a step whose output is complete with the same resume key (recipe sections +
  input content hashes + options), so re-running after a kill, or after changing one recipe value, redoes
  only the steps that changed or never finished; a killed training step resumes from its checkpoints;
* **retries**: each step is a Prefect task with ``retries``; errors that a retry cannot fix (a bad recipe,
  too few pairs) are not retried;
* **progress**: one line per step as it starts and ends (ran / skipped, seconds), and a summary table.

Prefect's local API server starts by itself (ephemeral mode). :func:`configure_prefect` points
``PREFECT_HOME`` into the run's cache, turns analytics off and raises the server start-up timeout so a
first run on a fresh, loaded machine does not time out.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from srcal.graph import Step, round_names  # noqa: F401 - re-exported: flow.Step, flow.round_names

log = logging.getLogger("srcal.run.flow")


def _join(root: str, rel: str) -> str:
    from srcal.run import store

    return store.join(root, *rel.split("/"))


def plan_run(recipe, out: str) -> list[Step]:
    """The method's steps under run directory ``out``: :func:`srcal.graph.build_plan` expanded locally.

    Search runs in ``search.shards`` shards (``<round>/search-shards/<i>``, one after another) merged by
    ``search-merge`` at ``<round>/search`` when more than one is asked for; the pipeline fans the same
    shards out in a ParallelFor. The order is the plan's (a topological order).
    """
    from srcal import graph

    return graph.expand(graph.build_plan(recipe), recipe.search.shards, lambda rel: _join(out, rel))


def default_out(recipe_name: str) -> str:
    return str(Path("runs") / Path(recipe_name).stem)


def configure_prefect(out: str) -> None:
    """Environment for Prefect's ephemeral local API, set before ``prefect`` is imported.

    * ``PREFECT_HOME`` in the run's cache (``<run>/.prefect`` for a local run, the srcal cache for S3), so
      runs do not share one SQLite file and nothing lands in ``~/.prefect``;
    * start-up timeout 180 s: the first start migrates a fresh database, which took ~25 s on a loaded
      2-core machine and hit Prefect's default limit;
    * analytics off (no network here), Prefect's own log lines at WARNING so the progress lines stay
      readable. A user's explicit settings (e.g. ``PREFECT_API_URL`` of a real server) win;
    * ``OMP_WAIT_POLICY=PASSIVE`` for the stages run in this process (see below).
    """
    import hashlib

    from srcal.run import store

    if store.is_s3(out):
        home = store.cache_root() / "prefect" / hashlib.sha256(out.encode()).hexdigest()[:12]
    else:
        home = Path(out).resolve() / ".prefect"
    home.mkdir(parents=True, exist_ok=True)
    for k, v in {
        # Idle OpenMP threads sleep instead of spinning. Measured on our shared 2-core box (load ~10):
        # a tiny MLP training loop took 39.9 s with torch's default (2 spinning threads), 11.4 s with
        # PASSIVE, 11.9 s with 1 thread. Must be set before torch is first imported (stages import it).
        "OMP_WAIT_POLICY": "PASSIVE",
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_LOGGING_TO_API_ENABLED": "false",
    }.items():
        os.environ.setdefault(k, v)


class Progress:
    """One line per step on stderr (works in a terminal, a CI log and a pod log alike)."""

    def __init__(self, total: int, stream=None):
        self.total, self.done, self.stream = total, 0, stream or sys.stderr
        self.rows: list[dict[str, Any]] = []

    def start(self, step: Step) -> None:
        print(f"[{self.done + 1:2d}/{self.total}] {step.key:22s} {step.stage:14s} running …",
              file=self.stream, flush=True)

    def end(self, step: Step, status: str, seconds: float, note: str = "") -> None:
        self.done += 1
        self.rows.append({"step": step.key, "stage": step.stage, "status": status, "seconds": round(seconds, 1)})
        print(f"[{self.done:2d}/{self.total}] {step.key:22s} {step.stage:14s} {status:8s} {seconds:7.1f}s {note}",
              file=self.stream, flush=True)


def _not_retryable(exc: BaseException) -> bool:
    """Errors a retry cannot fix: the recipe, the stage's own verdict, or the data (the same rows fail the
    same way; retrying a DataError over the rejected-share threshold only repeats the stage's work)."""
    from srcal.config import RecipeError
    from srcal.data.schema import DataError
    from srcal.errors import StageError

    return isinstance(exc, (RecipeError, StageError, DataError, KeyboardInterrupt))


def _retry_condition(task, task_run, state) -> bool:
    """Prefect asks before each retry: retry transient failures, not configuration errors."""
    try:
        state.result(raise_on_failure=True)
    except BaseException as e:  # noqa: BLE001 - we only classify the exception
        return not _not_retryable(e)
    return True


def _step_note(summary: dict[str, Any]) -> str:
    counts = summary.get("counts")
    if not isinstance(counts, dict):
        return ""
    flat = {k: (v.get("n", v.get("kept")) if isinstance(v, dict) else v) for k, v in counts.items()}
    return " ".join(f"{k}={v}" for k, v in list(flat.items())[:5] if isinstance(v, (int, float, str)))


def seed_from(steps: list[Step], source: str, out: str) -> list[str]:
    """Copy every complete artifact of run ``source`` that ``out`` lacks (local runs only).

    This makes ablations cheap: ``srcal run --from runs/tiny --out runs/tiny-uniform --set
    curate.aggregation=uniform`` starts with the main run's artifacts, and the resume keys then decide
    what is reused (data, base, RFT, judge, round-1 search and scoring) and what is recomputed (curation
    onwards). Copies go through a temporary name and a rename, so a killed copy is never complete.
    """
    import shutil

    from srcal.run import store

    if store.is_s3(source) or store.is_s3(out):
        raise ValueError("--from works between local run directories")
    copied = []
    for step in steps:
        src = Path(source) / step.key
        dst = Path(step.output)
        if store.is_complete(str(src)) and not store.is_complete(str(dst)):
            tmp = dst.with_name(dst.name + ".copying")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(src, tmp)
            shutil.rmtree(dst, ignore_errors=True)
            tmp.rename(dst)
            copied.append(step.key)
    return copied


def run_flow(recipe, out: str | None = None, *, retries: int = 1, force: list[str] | None = None,
             stream=None, seed_run: str | None = None) -> dict[str, Any]:
    """Run (or resume) the whole method into ``out``; returns ``{"out", "steps": [...], "wall_s"}``.

    ``force`` lists step keys (e.g. ``round1/align``) to recompute even if complete; ``seed_run`` is a
    finished run directory whose artifacts are copied in first (:func:`seed_from`).
    """
    from srcal.run import store

    out = (out or default_out(recipe.name)).rstrip("/")
    if not store.is_s3(out):
        Path(out).mkdir(parents=True, exist_ok=True)
        out = str(Path(out).resolve())
    if seed_run:
        copied = seed_from(plan_run(recipe, out), seed_run, out)
        print(f"srcal run: copied {len(copied)} finished artifacts from {seed_run}", file=stream or sys.stderr)
    configure_prefect(out)
    from prefect import flow, task

    for noisy in ("httpx", "httpcore"):  # Prefect's client logs every API call at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)

    steps = plan_run(recipe, out)
    force = set(force or [])
    progress = Progress(len(steps), stream)
    print(f"srcal run: recipe {recipe.name}, {recipe.rounds} round(s), {len(steps)} steps -> {out}",
          file=progress.stream, flush=True)

    @task(name="stage", retries=retries, retry_delay_seconds=2, retry_condition_fn=_retry_condition,
          task_run_name="{step_key}")
    def stage_task(step_key: str, step: Step) -> dict[str, Any]:
        from srcal import stages

        return stages.execute(step.stage, recipe, step.inputs, step.output, force=step.key in force,
                              **step.options)

    @flow(name=f"srcal-{recipe.name}", log_prints=False, validate_parameters=False)
    def srcal_run() -> list[dict[str, Any]]:
        for step in steps:
            progress.start(step)
            t0 = time.time()
            summary = stage_task(step.key, step)
            status = "skipped" if summary.get("skipped") else "ran"
            progress.end(step, status, time.time() - t0, _step_note(summary))
        return progress.rows

    t0 = time.time()
    with _terminate_as_exit():
        srcal_run()
    wall = time.time() - t0
    publish_run_files(out, wall, progress.rows)
    return {"out": out, "steps": progress.rows, "wall_s": round(wall, 1)}


class _terminate_as_exit:
    """Turn SIGTERM (``kill``, a pod eviction, CI cancelling) into SystemExit while the flow runs.

    Python's default SIGTERM action ends the process without unwinding, which would leave Prefect's
    ephemeral API server (a child process) running; as an exception it unwinds like Ctrl-C: the step in
    flight publishes nothing, its scratch directory (checkpoints) stays for the re-run, and Prefect's
    exit handlers stop the server.
    """

    def __enter__(self):
        import signal
        import threading

        self.old = None
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise SystemExit(128 + signum)

    def __exit__(self, *exc):
        import signal

        if self.old is not None:
            signal.signal(signal.SIGTERM, self.old)
        return False


def publish_run_files(out: str, wall_s: float, rows: list[dict[str, Any]]) -> None:
    """Copy ``metrics.json``, ``report.md`` and ``report.html`` from ``report/`` to the run directory's
    top, adding this invocation's wall time and what ran or was skipped (``run`` key) to metrics.json."""
    from srcal.run import store

    report = store.join(out, "report")
    metrics = store.read_json(report, "metrics.json")
    metrics["run"] = {"wall_s": round(wall_s, 1), "steps": rows}
    store.write_json(out, "metrics.json", metrics)
    store.write_bytes(out, "report.html", store.read_bytes(report, "report.html"))  # self-contained
    md = store.read_text(report, "report.md").replace("](plots/", "](report/plots/")
    store.write_text(out, "report.md", md)
