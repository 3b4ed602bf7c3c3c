"""What the Kubeflow components call in the image: the few lines a component body needs around
:func:`srcal.stages.execute` (:func:`run_stage`, :func:`run_step`, :func:`log_metrics`, :func:`run_report`,
:func:`export_run`, …).

A component hands over its artifacts' local ``.path``; the stage publishes into the output ``.path`` (so
the completion marker is there when the KFP launcher uploads it to the S3 ``pipeline_root``, and the next
step's ``execute`` accepts it as a finished input). This module sits *below* ``components/`` and
``pipelines/`` and imports neither (compiling and submitting, which sit above them, are
:mod:`srcal.kubeflow.client`). Light at import: kfp, kubernetes and boto3 are imported inside functions.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger("srcal.kubeflow.steps")

PACKAGE_NAME = "srcal_pipeline.yaml"


class PipelineError(RuntimeError):
    """A pipeline that cannot be compiled, submitted or scheduled; the message says what to change."""


# ====================================================================================== component side


def parse_overrides(overrides: str) -> list[str]:
    """The ``overrides`` pipeline parameter: a JSON list of ``key=value`` strings (``"[]"`` for none).

    A JSON string, not a KFP list parameter, because every submission path (UI form, ``kfp run
    create key=value``, recurring runs) passes strings through unchanged.
    """
    text = (overrides or "").strip() or "[]"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise PipelineError(f"overrides={overrides!r}: not JSON ({e}); expected e.g. '[\"align.beta=0.2\"]'") from e
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise PipelineError(f"overrides={overrides!r}: expected a JSON list of \"key=value\" strings")
    return value


def load_component_recipe(recipe: str, overrides: str, extra_overrides: list[str] | tuple = ()):
    """The recipe a component runs with: the named recipe, the run's overrides, then the step's own."""
    from srcal.config import load_recipe

    return load_recipe(recipe, [*parse_overrides(overrides), *extra_overrides])


def run_stage(stage: str, recipe: str, overrides: str, inputs: dict[str, str], output: str, *,
              options: dict[str, str] | None = None, extra_overrides: list[str] | tuple = (),
              gpus: int | None = None, accelerator_type: str = "nvidia.com/gpu") -> dict:
    """Run ``stage`` from the input artifacts' local paths into the output artifact's path.

    ``stages.execute`` writes into ``<output>.partial`` and renames it onto ``output`` with the completion
    marker, so the directory the KFP launcher uploads is complete or absent (a failed stage uploads
    nothing, and KFP marks the task failed).
    """
    from srcal import stages

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_gpus(gpus, accelerator_type)
    rec = load_component_recipe(recipe, overrides, extra_overrides)
    summary = stages.execute(stage, rec, dict(inputs), output, **(options or {}))
    print(json.dumps({"stage": stage, "summary": summary}, indent=2, default=str))
    return summary


def step_options(step: str, recipe: str, overrides: str, shard: str | None = None) -> tuple[str, dict[str, str]]:
    """(stage, options) of plan step ``step`` (``srcal.graph``) under the run's recipe and overrides.

    Components receive their plan step key, not its options: the options are resolved here, from the recipe
    the run actually uses (a submit-time ``--set`` reaches them), by the very plan the DAG was compiled from.
    """
    from srcal import graph

    try:
        return graph.step_options(load_component_recipe(recipe, overrides), step, shard)
    except (KeyError, ValueError) as e:
        raise PipelineError(f"{e.args[0]}; was the pipeline compiled for another recipe or round count? "
                            "recompile it with `srcal pipeline compile --recipe <recipe>`") from e


def run_step(step: str, recipe: str, overrides: str, inputs: dict[str, str], output: str, *,
             shard: str | None = None, extra_overrides: list[str] | tuple = (), gpus: int | None = None,
             accelerator_type: str = "nvidia.com/gpu") -> dict:
    """Run plan step ``step`` (one shard of it with ``shard="i/n"``) as :func:`run_stage`, with the stage and
    options the plan gives it: the same call ``srcal run`` makes for that step."""
    stage, options = step_options(step, recipe, overrides, shard)
    return run_stage(stage, recipe, overrides, inputs, output, options=options, extra_overrides=extra_overrides,
                     gpus=gpus, accelerator_type=accelerator_type)


def check_gpus(gpus: int | None, accelerator_type: str = "nvidia.com/gpu") -> None:
    """Fail fast, with the fix, when a GPU step sees fewer GPUs than its ``*_gpus`` parameter asked for
    (a wrong accelerator type, or a node pool without the device plugin), instead of training on CPU.
    Only CUDA/ROCm resource types are counted (through torch); others are trusted."""
    if not gpus or not any(v in accelerator_type for v in ("nvidia.com", "amd.com")):
        return
    import torch

    seen = torch.cuda.device_count()
    if seen < gpus:
        raise PipelineError(f"this step asked for {gpus} GPU(s) but sees {seen}: check the accelerator_type "
                            "and *_gpus pipeline parameters and the GPU node pool's device plugin")


def run_score_step(recipe: str, overrides: str, judge_serving: str, judge_url: str, inputs: dict[str, str],
                   output: str, *, gpus: int | None = None, accelerator_type: str = "nvidia.com/gpu") -> dict:
    """The score step for each way of serving the judge (see :mod:`srcal.kubeflow.kserve`)."""
    from srcal.kubeflow import kserve
    from srcal.serve.servers import serve_judge_locally

    kw = {"gpus": gpus, "accelerator_type": accelerator_type}
    if judge_serving == "kserve":
        if not judge_url:
            raise PipelineError("judge_serving=kserve but rscorer-serve returned no URL")
        extra = ["rscorer.serve=openai", f"rscorer.url={judge_url}"]
        return run_stage("score", recipe, overrides, inputs, output, extra_overrides=extra, **kw)
    if judge_serving == "in-step":
        return run_stage("score", recipe, overrides, inputs, output, extra_overrides=["rscorer.serve=hf"], **kw)
    if judge_serving == "in-step-vllm":
        check_gpus(gpus, accelerator_type)
        log_path = str(Path(output).parent / "judge-server.log")
        with serve_judge_locally(inputs["judge"], gpu=bool(gpus), log_path=log_path) as url:
            extra = ["rscorer.serve=openai", f"rscorer.url={url}"]
            return run_stage("score", recipe, overrides, inputs, output, extra_overrides=extra, **kw)
    raise PipelineError(f"judge_serving={judge_serving!r}: expected one of {kserve.MODES}")


def import_artifact(uri: str, dest: str) -> None:
    """Copy the finished srcal artifact at ``uri`` (local or s3://) into ``dest``, marker included."""
    from srcal.run import store

    if not store.is_complete(uri):
        raise PipelineError(f"{uri}: not a finished srcal artifact (no {store.MARKER}); for data_uri, build it "
                            "with `srcal data build --out <uri>` or leave data_uri empty")
    local = store.materialize(uri)
    shutil.copytree(local, dest, dirs_exist_ok=False, symlinks=False)


def extract_files(src: str, dest: str, names: list[str]) -> None:
    """Publish the named small files of the finished artifact ``src`` as a finished artifact ``dest``
    (missing names skipped), keeping ``src``'s stage and resume key in the marker.

    Why: the KFP launcher downloads every input in full, so a step that needs a model's metrics or
    summary (report, export) gets this extract instead of the weights.
    """
    from srcal.run import store

    origin = store.read_marker(src)
    scratch = store.scratch_dir(dest)
    for name in names:
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, scratch / name)
    store.publish(scratch, dest, marker={"stage": f"{origin.get('stage')}-extract",
                                         "resume_key": origin.get("resume_key"), "files_from": names})


def numeric_leaves(obj: Any, prefix: str = "", limit: int = 100) -> dict[str, float]:
    """Flatten the numeric values of a JSON object into ``{"a.b.c": x}`` (bools and NaN excluded),
    at most ``limit`` of them: the KFP UI's metrics table and *Compare runs* take flat scalars.
    List items are keyed by their ``name`` (``rounds.rft.accuracy``), else by position."""
    out: dict[str, float] = {}

    def walk(node: Any, key: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(node, dict):
            for k in sorted(node):
                walk(node[k], f"{key}.{k}" if key else str(k))
        elif isinstance(node, list):
            for i, item in enumerate(node):
                name = item.get("name") if isinstance(item, dict) else None
                walk(item, f"{key}.{name if isinstance(name, str) else i}")
        elif isinstance(node, (int, float)) and not isinstance(node, bool) and not math.isnan(node):
            out[key] = float(node)

    walk(obj, prefix)
    return out


def log_metrics(metrics, artifact_dir: str, filename: str) -> dict[str, float]:
    """Log the numeric leaves of ``artifact_dir/filename`` on a KFP ``Metrics`` output (if the file exists)."""
    path = Path(artifact_dir) / filename
    if not path.is_file():
        log.warning("no %s in %s: nothing to log as metrics", filename, artifact_dir)
        return {}
    values = numeric_leaves(json.loads(path.read_text()))
    for k, v in values.items():
        metrics.log_metric(k, v)
    return values


def run_report(recipe: str, overrides: str, parts: dict[str, str], report_dir: str, html_path: str,
               md_path: str, metrics=None) -> dict:
    """Run the ``report`` stage on this run's artifacts and copy its pages into the UI artifacts."""
    summary = run_stage("report", recipe, overrides, parts, report_dir)
    for name, dest in (("report.html", html_path), ("report.md", md_path)):
        src = Path(report_dir) / name
        if not src.is_file():
            raise PipelineError(f"the report stage wrote no {name} into {report_dir}")
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    if metrics is not None:
        log_metrics(metrics, report_dir, "metrics.json")
    return summary


def export_run(s3_prefix: str, run_id: str, parts: dict[str, str]) -> list[str]:
    """Publish each finished artifact in ``parts`` to ``<s3_prefix>/<run_id>/<name>`` with its own
    completion marker (upload first, marker last), keeping the producing stage's resume key."""
    from srcal.run import store

    if not s3_prefix:
        print("s3_prefix is empty: nothing exported")
        return []
    done = []
    for name, path in sorted(parts.items()):
        uri = store.join(s3_prefix, run_id, name)
        origin = store.read_marker(path)
        marker = {k: v for k, v in origin.items() if k not in ("hash", "files", "created")}
        store.publish(path, uri, marker={**marker, "exported_from": path})
        print(f"exported {name} -> {uri}")
        done.append(uri)
    return done
