"""The stage table and the one runner that both `srcal stage` (KFP components) and `srcal run` use.

Every stage is a pure function over local paths::

    def run_<stage>(recipe: Recipe, inputs: dict[str, Path], out: Path, **options) -> dict

It reads its named inputs, writes its artifacts into ``out`` and returns a summary dict (counts in/out,
dropped with reasons). :func:`execute` wraps it with what no stage should re-implement:

1. inputs given as URIs (local dirs or ``s3://``) are materialised as local directories, and each must
   be a *complete* artifact (its completion marker present), so a half-written one is never read;
2. the stage writes into a scratch directory that is stable for the output URI (so a killed training
   stage finds its checkpoints on re-run) and never into the published location;
3. ``summary.json`` gets the timings and the resume key added;
4. the scratch directory is published atomically (local rename, or S3 upload-then-marker), so a
   finished artifact is never overwritten by a partial one; a failing stage publishes nothing;
5. if the output is already complete with the same resume key, the stage is skipped.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import sys
import time
from typing import Any

from srcal.config import Recipe
from srcal.errors import StageError

__all__ = ["STAGES", "StageError", "execute", "resolve", "resume_key"]

log = logging.getLogger("srcal.stages")

# name -> ("module:function", recipe sections that key its resume hash).
# A stage's resume key = hash(those recipe sections + the input artifacts' content hashes + options).
STAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "data": ("srcal.data.build:run_data_build", ("seed", "data")),
    "base": ("srcal.rft.base:run_base", ("seed", "data", "model", "base_train", "device")),
    "rft": ("srcal.rft.sft:run_rft", ("seed", "model", "teacher", "rft", "rap_answer_prefix", "device")),
    "eval": ("srcal.evaluate:run_eval", ("seed", "model", "eval", "rap_answer_prefix", "device")),
    # rounds: with search.fresh_per_round, round k's calibration slice depends on how many rounds share it
    "search": ("srcal.search.stage:run_search", ("seed", "rounds", "model", "search", "rap_answer_prefix", "device")),
    "search-merge": ("srcal.search.stage:run_search_merge", ()),
    "rscorer-data": ("srcal.scorer.data:run_rscorer_data", ("seed", "data", "labeller", "rscorer", "teacher",
                                                            "rap_answer_prefix")),
    "rscorer-train": ("srcal.scorer.train:run_rscorer_train", ("seed", "data", "rscorer", "rap_answer_prefix")),
    "score": ("srcal.scorer.score:run_score", ("score", "rscorer")),
    "curate": ("srcal.curate:run_curate", ("curate", "rap_answer_prefix")),
    "align": ("srcal.align:run_align", ("seed", "model", "align")),
    "report": ("srcal.report:run_report", ("name",)),
}


def resolve(name: str):
    if name not in STAGES:
        raise StageError(f"unknown stage {name!r}; known stages: {sorted(STAGES)}")
    target, _ = STAGES[name]
    mod, fn = target.split(":")
    return getattr(importlib.import_module(mod), fn)


def resume_key(name: str, recipe: Recipe, input_hashes: dict[str, str], options: dict[str, Any]) -> str:
    import hashlib

    _, sections = STAGES[name]
    if name == "search" and not (options.get("round") and recipe.search.fresh_per_round):
        # only a round's fresh calibration slice depends on the round count; the judge's search over the RFT
        # split (no round option) must be reused by a 1-round ablation run with --from a 3-round run
        sections = tuple(s for s in sections if s != "rounds")
    d = recipe.to_dict()
    picked = {s: d.get(s) for s in sections}
    blob = json.dumps({"stage": name, "recipe": picked, "inputs": input_hashes, "options": options},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _torch_threads_restored():
    """Give torch's intra-op thread count back after a stage. A stage may pin it (the tiny judge trains and
    scores on ``rscorer.threads`` = 1), and the setting is process-wide: without this, every later stage of a
    ``srcal run`` (one process) — the rounds' search, DPO and eval — ran on that one thread as well.
    torch is read from ``sys.modules``, not imported: the stages that never load it (data, curate, report,
    rscorer-data, search-merge) do not pay its import; a stage that first imports it starts at its default."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        if before is not None:
            torch.set_num_threads(before)


def execute(name: str, recipe: Recipe, inputs: dict[str, str], output: str, *,
            force: bool = False, **options: Any) -> dict:
    """Run stage ``name`` from input URIs to an output URI, resumably and atomically. Returns the summary."""
    from srcal.run import store

    if name not in STAGES:
        raise StageError(f"unknown stage {name!r}; known stages: {sorted(STAGES)}")
    input_hashes: dict[str, str] = {}
    for key, uri in inputs.items():
        if not store.is_complete(uri):
            raise StageError(
                f"stage {name}: input {key}={uri} is not a finished artifact (no completion marker); "
                f"run the stage that produces it first"
            )
        input_hashes[key] = store.artifact_hash(uri)
    key = resume_key(name, recipe, input_hashes, options)
    if not force and store.is_complete(output) and store.read_marker(output).get("resume_key") == key:
        # decided from markers alone: a skipped step imports no stage code and downloads no inputs
        log.info("stage %s: %s is complete with the same inputs; skipping", name, output)
        summary = store.read_json(output, "summary.json")
        summary["skipped"] = True
        return summary
    fn = resolve(name)
    local_inputs = {k: store.materialize(uri) for k, uri in inputs.items()}
    scratch = store.scratch_dir(output)
    t0 = time.time()
    log.info("stage %s: running -> %s (scratch %s)", name, output, scratch)
    with _torch_threads_restored():
        summary = fn(recipe, local_inputs, scratch, **options) or {}
    summary = {"stage": name, **summary, "resume_key": key, "inputs": inputs,
               "timings_s": {**summary.get("timings_s", {}), "total": round(time.time() - t0, 3)}}
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        # One rank of a job whose every process runs this stage (a multi-node TrainJob: srcal.kubeflow.trainjob):
        # only global rank 0, which holds the saved model, publishes.
        log.info("stage %s: rank %s of a distributed job; rank 0 publishes", name, os.environ["RANK"])
        return summary
    (scratch / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    store.publish(scratch, output, marker={"resume_key": key, "stage": name})
    return summary
