"""SIGKILL at random moments: a cut-down ``srcal run`` (and one S3 publish) killed and re-run.

What must hold after every kill: the re-run completes; every step that was complete before the kill is
reported ``skipped`` and its completion marker is untouched (nothing finished is redone); nothing half-done
is complete (a killed S3 publish leaves no marker); and the final ``metrics.json`` equals an uninterrupted
run's, metric for metric (timings and the provenance field ``resumed_from`` excluded).

The whole process group is killed (``os.killpg``), as the kernel's OOM killer, a node loss or a pod eviction
past its grace period does: the srcal process, Prefect's local API server and any worker die together.
The ≥ 10-kill test is slow-marked; the default suite kills one S3 publish.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from faultproxy import FaultProxy

from srcal import stages
from srcal.run import store
from srcal.config import load_recipe

SRCAL = Path(sys.executable).parent / "srcal"

# Every stage real, one round, sizes cut so one run takes about a minute on two loaded cores. Checkpoints
# after every training step (rft, align), so a kill inside training exercises resume-from-checkpoint.
RUN = [
    "rounds=1",
    "model.tiny.vision_hidden=32", "model.tiny.text_hidden=64", "model.tiny.text_heads=1",
    "model.tiny.vocab_size=400", "model.tiny.corpus_samples=150",
    "data.rft_size=16", "data.calib_size=8", "data.eval_size=8", "data.base_train_size=16",
    "base_train.steps=3", "base_train.batch_size=4",
    "rft.batch_size=4", "rft.epochs=1", "rft.lora.r=4", "rft.lora.alpha=8", "rft.save_steps=1",
    "eval.batch_size=8", "eval.max_new_tokens=12",
    "rscorer.n_train_pairs=60", "rscorer.n_heldout_pairs=20", "rscorer.steps=4", "rscorer.batch_size=4",
    "search.beams=2", "search.expansions=2", "search.max_sentences=3", "search.max_sentence_tokens=12",
    "search.n_candidates=2", "search.batch_size=8",
    "curate.min_pairs=1", "curate.min_margin=0", "curate.min_confidence=0", "curate.require_correct=false",
    "curate.chosen_pool=all",
    "align.batch_size=2", "align.epochs=1", "align.lora.r=4", "align.lora.alpha=8", "align.save_steps=1",
]
DATA = ["data.rft_size=16", "data.calib_size=8", "data.eval_size=8", "data.base_train_size=16"]
_LINE = re.compile(r"^\[\s*\d+/\d+\] (\S+)\s+(\S+)\s+(running|ran|skipped)\b\s*([0-9.]+)?")


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


@dataclass
class Invocation:
    """One ``srcal`` process: how it ended and what its progress lines say."""

    rc: int | None
    log: str
    seconds: float
    killed_at: float | None = None
    ended: dict[str, str] = field(default_factory=dict)  # step -> ran | skipped
    step_s: dict[str, float] = field(default_factory=dict)  # step -> seconds, as printed
    in_flight: str | None = None  # the step that was running when it was killed

    def __post_init__(self):
        running = None
        for line in self.log.splitlines():
            m = _LINE.match(line)
            if m:
                key, status = m.group(1), m.group(3)
                if status == "running":
                    running = key
                else:
                    self.ended[key] = status
                    self.step_s[key] = float(m.group(4) or 0)
                    running = None if running == key else running
        self.in_flight = running


def _start(argv: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    log = open(log_path, "w")  # noqa: SIM115 - closed by the child's exit; read back after wait()
    try:
        return subprocess.Popen([str(SRCAL), *argv], stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    finally:
        log.close()


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    for _ in range(100):  # the group's other members (Prefect's server) are gone too
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process group {proc.pid} survived SIGKILL")


def _invoke(argv: list[str], log_path: Path, env: dict[str, str], kill_after: float | None = None,
            timeout: float = 900, after_work_starts: set[str] | None = None,
            kill_when: Path | None = None) -> Invocation:
    """Run ``srcal``; SIGKILL its process group ``kill_after`` seconds after the start or, with
    ``after_work_starts`` (the steps complete already), after the first other step starts running; or as
    soon as the file ``kill_when`` exists."""
    t0 = time.time()
    proc = _start(argv, log_path, env)
    killed = None
    if kill_when is not None:
        while proc.poll() is None and not kill_when.exists():
            time.sleep(0.02)
        if proc.poll() is None:
            _kill_group(proc)
            killed = time.time() - t0
        else:
            proc.wait()
        return Invocation(None if killed else proc.returncode, log_path.read_text(), time.time() - t0, killed)
    try:
        if kill_after is not None and after_work_starts is not None:
            while proc.poll() is None and not any(
                    (m := _LINE.match(line)) and m.group(3) == "running" and m.group(1) not in after_work_starts
                    for line in log_path.read_text(errors="replace").splitlines()):
                time.sleep(0.1)
            kill_after += time.time() - t0
        proc.wait(timeout=max(0.0, kill_after - (time.time() - t0)) if kill_after is not None else timeout)
    except subprocess.TimeoutExpired:
        if kill_after is None:
            _kill_group(proc)
            raise
        _kill_group(proc)
        killed = time.time() - t0
    return Invocation(None if killed else proc.returncode, log_path.read_text(), time.time() - t0, killed)


def _complete_markers(out: str, keys: list[str]) -> dict[str, dict]:
    """Step key → marker, for the steps of ``out`` that are complete now."""
    found = {}
    for key in keys:
        uri = store.join(out, *key.split("/"))
        if store.is_complete(uri):
            found[key] = store.read_marker(uri)
    return found


_TIMING = re.compile(r"(^|_)(s|seconds|runtime_s|timings_s|train_s|wall_s)$")


def metric_values(metrics: dict) -> dict:
    """metrics.json without what legitimately differs between two runs of the same recipe: the ``run`` block
    (wall time, ran/skipped), timings (keys ending in ``_s``), and ``resumed_from`` (a checkpoint path)."""

    def clean(x):
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()
                    if k not in ("run", "resumed_from", "timings_s") and not _TIMING.search(k)}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    return clean(metrics)


def _scratch(out: str, key: str, cache: Path) -> Path:
    """The stable scratch directory of step ``key`` (store.scratch_dir, without creating it)."""
    import hashlib

    uri = store.join(out, *key.split("/"))
    if store.is_s3(uri):
        return cache / "scratch" / hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
    return Path(uri + ".partial")


def _find(x, names: tuple[str, ...]):
    """The first value under any of ``names`` anywhere in nested dicts (None if absent)."""
    if isinstance(x, dict):
        for k, v in x.items():
            if k in names:
                return v
            if (found := _find(v, names)) is not None:
                return found
    return None


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "SRCAL_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}


# Files that carry timings (summary.json, train logs, the judge's held-out metrics with ``train_s``) or the
# absolute path of the run directory (PEFT's adapter_config.json and README.md name the base model's local
# path): they differ between any two runs. Everything else — weights, data, candidates, judgments, pairs,
# predictions — must be byte-identical to the uninterrupted run's.
_VARYING = {"summary.json", "README.md", "adapter_config.json", "train_log.json", "train_log.jsonl",
            "heldout_metrics.json"}


def _artifact_files(markers: dict[str, dict]) -> dict[str, dict]:
    """Per step (the report aside: it holds timings), sha256 of every file not in ``_VARYING``."""
    return {k: {f: d["sha256"] for f, d in m["files"].items() if Path(f).name not in _VARYING}
            for k, m in markers.items() if k != "report"}


# ------------------------------------------------------------------------------------ default suite


def test_kill_during_s3_publish_leaves_nothing_complete_and_rerun_finishes(s3_bucket, tmp_path):
    """``srcal stage data`` publishing to S3 through a proxy is SIGKILLed the moment its 5th file upload
    reaches the proxy (claim object up, some files up, no marker). The artifact reads as not complete and
    ``srcal stage data`` refuses nothing: the re-run publishes over the debris, and the result equals a build
    without the kill, file by file (sha256; summary.json holds timings)."""
    uri = f"{s3_bucket}/kills-{uuid.uuid4().hex[:8]}/data"
    reference = tmp_path / "reference"
    stages.execute("data", load_recipe("tiny", DATA), {}, str(reference))
    state = {"puts": 0, "proc": None, "killed": False}

    def kill_on_fifth_upload(method: str, target: str) -> None:
        if method == "PUT" and "/data/" in target and store.CLAIM not in target and not state["killed"]:
            state["puts"] += 1
            if state["puts"] == 5:
                state["killed"] = True
                _kill_group(state["proc"])

    proxy = FaultProxy(os.environ["AWS_ENDPOINT_URL"], on_request=kill_on_fifth_upload)
    env = {**_env(tmp_path / "cache"), "AWS_ENDPOINT_URL": proxy.url, "SRCAL_S3_MAX_CONCURRENCY": "1"}
    argv = ["stage", "data", "--output", uri, *_sets(DATA)]
    try:
        state["proc"] = _start(argv, tmp_path / "killed.log", env)
        state["proc"].wait(timeout=300)
        assert state["killed"], (tmp_path / "killed.log").read_text()[-2000:]
        bucket, prefix = store.split_s3(uri)
        keys = {k.removeprefix(prefix + "/") for k in store._s3_list(bucket, prefix)}
        assert store.CLAIM in keys and store.MARKER not in keys and 1 <= len(keys) - 1 < len(
            store.read_marker(str(reference))["files"]), sorted(keys)
        assert not store.is_complete(uri)
        again = _invoke(argv, tmp_path / "rerun.log", {**env, "SRCAL_S3_MAX_CONCURRENCY": "16"})
    finally:
        proxy.close()
    assert again.rc == 0, again.log[-3000:]
    published = store.read_marker(uri)["files"]
    clean = store.read_marker(str(reference))["files"]
    assert {k: v for k, v in published.items() if k != "summary.json"} == \
        {k: v for k, v in clean.items() if k != "summary.json"}
    bucket, prefix = store.split_s3(uri)
    assert sorted(k.removeprefix(prefix + "/") for k in store._s3_list(bucket, prefix)) == sorted(
        [*published, store.MARKER]), "no debris of the killed publish (claim, stray files) is left"
    assert store.file_digests(store.materialize(uri)) == published


# ----------------------------------------------------------------------------------------- slow


@pytest.mark.slow
@pytest.mark.timeout(3600)  # about 20 minutes on two loaded cores
def test_random_kills_of_srcal_run_resume_to_the_same_metrics(s3_bucket, tmp_path):
    """A one-round ``srcal run`` (every stage real, tiny sizes) is SIGKILLed 12 times: once inside an S3
    publish (the 3rd file upload of ``rft``), once each inside rft's and align's training right after a
    checkpoint (the re-run resumes from it), the rest at random moments, in chains of up to four kills
    (the first to S3, the others local), re-run after each kill. After each kill the steps complete before
    it are skipped, with their markers untouched; each chain's final metrics.json equals an uninterrupted
    run's, and so does every artifact's content (weights, data, candidates, judgments, pairs; files with
    timings or absolute paths aside). The kill moments, the step in flight and the outcome are printed
    (``-s``) for docs/reliability.md."""
    seed = int(os.environ.get("SRCAL_KILL_SEED", "14"))
    rng = random.Random(seed)
    steps = [s.key for s in __import__("srcal.run.flow", fromlist=["plan_run"]).plan_run(
        load_recipe("tiny", RUN), "/x")]
    argv = ["run", *_sets(RUN)]

    ref_out = str(tmp_path / "reference")
    ref = _invoke([*argv, "--out", ref_out], tmp_path / "reference.log", _env(tmp_path / "cache-ref"))
    assert ref.rc == 0, ref.log[-3000:]
    ref_metrics = metric_values(json.loads(Path(ref_out, "metrics.json").read_text()))
    ref_files = _artifact_files(_complete_markers(ref_out, steps))
    print(f"\nreference run: {ref.seconds:.1f} s, {len(steps)} steps; kill seed {seed}", flush=True)

    # A kill moment is drawn uniformly between 2 s and 85% of the expected length of this invocation (start-up
    # as in the reference, plus the reference's seconds for every step not complete yet), or, every other time,
    # between 0 and 85% of the remaining steps' seconds counted from when the first of them starts, so kills
    # land in start-up, training, evaluation and publishing alike. A chain whose run finishes before its kill moment is
    # done; new chains (fresh run directories) start until 12 kills have happened. The first chain writes to
    # S3 and is first killed inside rft's publish; the second and third are first killed inside training, right
    # after rft's 2nd and align's 1st checkpoint. Chains from the third on start with the reference's first
    # six artifacts (data … rscorer/search) copied in, so their kills land in the later steps (judge training,
    # search, scoring, curation, alignment, evaluation, report) as often as the early ones.
    startup = ref.seconds - sum(ref.step_s.values())
    report = []
    chain = 0
    while sum(r["killed_at_s"] is not None for r in report) < 12:
        assert chain < 8, report
        name = "s3" if chain == 0 else f"local-{chain}"
        out = f"{s3_bucket}/kills-{uuid.uuid4().hex[:8]}" if chain == 0 else str(tmp_path / name)
        env = _env(tmp_path / f"cache-{name}")
        if chain >= 2:
            import shutil

            for key in steps[:steps.index("rscorer/judge")]:
                shutil.copytree(Path(ref_out, key), Path(out, key))
        before: dict[str, dict] = _complete_markers(out, steps)
        kills, i, last = 0, 0, False
        while not last:
            last = kills == 4
            log = tmp_path / f"{name}-{i}.log"
            if chain == 0 and i == 0:
                inv = _kill_in_s3_publish([*argv, "--out", out], log, env, step="rft")
            elif chain in (1, 2) and i == 0:
                # inside training, right after a checkpoint: the re-run must resume from it
                key, ckpt = ("rft", "checkpoint-2") if chain == 1 else ("round1/align", "checkpoint-1")
                inv = _invoke([*argv, "--out", out], log, env,
                              kill_when=_scratch(out, key, tmp_path) / "checkpoints" / ckpt / "trainer_state.json")
                assert inv.killed_at is not None and inv.in_flight == key, inv.log[-2000:]
            else:
                # Every other kill is timed from the moment the first unfinished step starts, so that kills
                # land inside the work and not only in start-up (imports, Prefect's server).
                work = sum(ref.step_s.get(k, 0) for k in steps if k not in before)
                in_work = i % 2 == 1
                inv = _invoke([*argv, "--out", out], log, env,
                              kill_after=None if last else rng.uniform(0.0 if in_work else 2.0,
                                                                       0.85 * (work + (0 if in_work else startup))),
                              after_work_starts=set(before) if in_work else None)
            kills += inv.killed_at is not None
            assert inv.killed_at is not None or inv.rc == 0, inv.log[-3000:]  # only a kill may stop it
            last = last or inv.rc == 0  # finished before the kill moment: the chain is done
            # nothing finished is redone: every step complete before this invocation was skipped by it
            # (if it got that far) and its marker is byte-for-byte the same afterwards
            now = _complete_markers(out, steps)
            redone = [k for k in before if inv.ended.get(k) == "ran" or now.get(k) != before[k]]
            assert not redone, (name, i, redone, inv.log[-3000:])
            row = {"chain": name, "invocation": i, "killed_at_s": None if inv.killed_at is None
                   else round(inv.killed_at, 1), "in_flight": inv.in_flight,
                   "complete_before": len(before), "complete_after": len(now),
                   "skipped": sum(v == "skipped" for v in inv.ended.values()),
                   "ran": sum(v == "ran" for v in inv.ended.values()), "rc": inv.rc}
            if inv.in_flight:  # what a re-run of the killed step can resume from
                ckpt = _scratch(out, inv.in_flight, tmp_path / f"cache-{name}") / "checkpoints"
                row["checkpoints_left"] = len(list(ckpt.glob("checkpoint-*"))) if ckpt.is_dir() else 0
            report.append(row)
            print(json.dumps(row), flush=True)
            before = now
            i += 1
        metrics = json.loads(store.read_text(out, "metrics.json"))
        assert metric_values(metrics) == ref_metrics, name
        got = _artifact_files(before)
        assert got == ref_files, {k for k in got if got[k] != ref_files.get(k)}
        resumed = {k: _find(json.loads(store.read_text(store.join(out, *k.split("/")), "summary.json")),
                            ("resumed_from", "resumed_from_step")) for k in ("rft", "round1/align")}
        print(f"chain {name}: {kills} kills; metrics.json and every artifact's weights/data equal the "
              f"uninterrupted run's; training resumed from: {resumed}", flush=True)
        chain += 1


def _kill_in_s3_publish(argv: list[str], log: Path, env: dict[str, str], step: str) -> Invocation:
    """Run through a proxy that SIGKILLs the process group at the 3rd file upload of ``step``'s publish."""
    state = {"puts": 0, "proc": None, "at": None}
    t0 = time.time()

    def hook(method: str, target: str) -> None:
        if (method == "PUT" and f"/{step}/" in target and store.CLAIM not in target and state["at"] is None
                and not target.rstrip("/").endswith(step)):
            state["puts"] += 1
            if state["puts"] == 3:
                state["at"] = time.time() - t0
                _kill_group(state["proc"])

    proxy = FaultProxy(os.environ["AWS_ENDPOINT_URL"], on_request=hook)
    try:
        state["proc"] = _start(argv, log, {**env, "AWS_ENDPOINT_URL": proxy.url, "SRCAL_S3_MAX_CONCURRENCY": "1"})
        state["proc"].wait(timeout=900)
    finally:
        proxy.close()
    inv = Invocation(None if state["at"] else state["proc"].returncode, log.read_text(), time.time() - t0,
                     state["at"])
    assert state["at"] is not None, f"{step} was never published in this invocation: {inv.log[-2000:]}"
    assert inv.in_flight == step, inv.in_flight
    return inv
