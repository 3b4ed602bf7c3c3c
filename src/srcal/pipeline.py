"""The Kubeflow side of srcal: what the components call in the image, and compile / submit / schedule.

Two halves, both light at import (kfp, kubernetes and boto3 are imported inside functions):

* **Component side** (:func:`run_stage`, :func:`log_metrics`, :func:`run_report`, :func:`export_run`, …):
  the few lines a KFP component body needs around :func:`srcal.stages.execute`. A component hands
  over its artifacts' local ``.path``; the stage publishes into the output ``.path`` (so the
  completion marker is there when the KFP launcher uploads it to the S3 ``pipeline_root``, and the
  next step's ``execute`` accepts it as a finished input).
* **Client side** (:func:`compile_pipeline`, :func:`submit`, :func:`schedule`): ``srcal pipeline
  compile|submit|schedule``. Every check that can fail (unknown recipe, a round count the compiled
  package does not have, a missing or malformed S3 secret name, a bad cron, an unreachable host)
  runs before anything is uploaded, and raises :class:`PipelineError` with what to change.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("srcal.pipeline")

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


def run_score(recipe: str, overrides: str, judge_serving: str, judge_url: str, inputs: dict[str, str],
              output: str, *, gpus: int | None = None, accelerator_type: str = "nvidia.com/gpu") -> dict:
    """The score step for each way of serving the judge (see :mod:`srcal.kserve`)."""
    from srcal import kserve
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
    from srcal import store

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
    from srcal import store

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
    from srcal import store

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


# ========================================================================================= compile


def repo_root() -> Path:
    """The source checkout holding ``components/`` and ``pipelines/`` (they are not in the wheel)."""
    candidates = [Path(__file__).resolve().parents[2], Path.cwd()]
    for root in candidates:
        if (root / "pipelines" / "srcal_pipeline.py").is_file() and (root / "components").is_dir():
            return root
    raise PipelineError(
        "compiling needs the srcal source checkout (components/ and pipelines/ are not installed with the "
        "package); run from the repository root, or pass --package to submit an already compiled YAML"
    )


def default_package() -> Path:
    return repo_root() / "pipelines" / PACKAGE_NAME


def build_pipeline(recipe: str | int = "tiny", rounds: int | None = None, overrides: list[str] | tuple = ()):
    """The pipeline function for ``recipe``'s plan (``srcal.graph``), ``rounds`` overriding its round count
    (imports kfp and the components). An int first argument is a round count of the tiny recipe (the
    signature before the plan existed)."""
    from srcal.config import RecipeError

    if isinstance(recipe, int):
        recipe, rounds = "tiny", recipe
    root = str(repo_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    from pipelines.srcal_pipeline import build_pipeline as build

    try:
        return build(recipe, rounds, overrides)
    except (ValueError, RecipeError) as e:
        raise PipelineError(str(e)) from e


def retag_images(text: str, image_tag: str | None = None, registry: str | None = None) -> str:
    """Point the compiled YAML at images built by ``images/build.sh`` (``<registry>/srcal-{train,vllm}:<tag>``)."""
    root = str(repo_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    import components as c

    for name, image in (("srcal-train", c.TRAIN_IMAGE), ("srcal-vllm", c.VLLM_IMAGE)):
        new = f"{registry or c.REGISTRY}/{name}:{image_tag or c.IMAGE_TAG}"
        text = text.replace(image, new)  # container images and the SRCAL_IMAGE env of training steps
    return text


def compile_pipeline(output: str | os.PathLike | None = None, *, recipe: str = "tiny", rounds: int | None = None,
                     overrides: list[str] | tuple = (), image_tag: str | None = None,
                     registry: str | None = None) -> Path:
    """Compile ``recipe``'s plan (``rounds`` overriding its round count) to ``output`` (default: the
    checked-in ``pipelines/srcal_pipeline.yaml``, the tiny recipe's plan, 3 rounds)."""
    from kfp import compiler

    out = Path(output) if output else default_package()
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(recipe, rounds, overrides), str(out))
    text = canonical_header(out.read_text())
    if image_tag or registry:
        text = retag_images(text, image_tag, registry)
    out.write_text(text)
    return out


def canonical_header(text: str) -> str:
    """Sort the keys of dict defaults in the compiler's ``# PIPELINE DEFINITION`` comment.

    KFP renders those defaults after a round trip through a protobuf Struct, whose key order follows
    the process's string hash seed, so without this two compiles of the same code differ and the
    staleness test could not compare bytes. Only comment lines are touched.
    """
    import ast

    def fix(m: re.Match) -> str:
        try:
            value = ast.literal_eval(m.group(2))
        except (ValueError, SyntaxError):
            return m.group(0)
        return f"{m.group(1)}{json.dumps(value, sort_keys=True)}]"

    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.startswith("#"):
            break
        lines[i] = re.sub(r"^(#\s+\w+: (?:dict|list) \[Default: )(.*)\]$", fix, line)
    return "\n".join(lines)


# ===================================================================================== package facts


def read_package(package: str | os.PathLike) -> tuple[dict, dict]:
    """(pipeline spec, platform spec) of a compiled package; a clear error if it is not one of ours."""
    import yaml

    p = Path(package)
    if not p.is_file():
        raise PipelineError(f"pipeline package {p} does not exist; run `srcal pipeline compile` first")
    docs = [d for d in yaml.safe_load_all(p.read_text()) if d]
    spec = next((d for d in docs if "pipelineInfo" in d), None)
    if spec is None or spec["pipelineInfo"].get("name") != "srcal":
        raise PipelineError(f"{p} is not a compiled srcal pipeline (pipelineInfo.name != 'srcal')")
    platform = next((d for d in docs if "platforms" in d), {})
    return spec, platform


def iter_tasks(spec: dict):
    """Every (dag component name, task name, task) of the pipeline, walking nested DAGs from the root."""
    comps = spec["components"]

    def walk(dag_name: str, dag: dict):
        for name, task in dag.get("tasks", {}).items():
            yield dag_name, name, task
            comp = comps.get(task["componentRef"]["name"], {})
            if "dag" in comp:
                yield from walk(task["componentRef"]["name"], comp["dag"])

    yield from walk("root", spec["root"]["dag"])


def package_rounds(spec: dict) -> int:
    """How many SRC rounds a compiled package unrolls (its align tasks)."""
    return sum(1 for _, _, t in iter_tasks(spec) if t["componentRef"]["name"].startswith("comp-align-op"))


def package_parameters(spec: dict) -> dict[str, dict]:
    return spec["root"].get("inputDefinitions", {}).get("parameters", {})


# ================================================================================ submit / schedule

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def check_secret_name(name: str) -> str:
    """The S3 secret name must be given and be a valid Kubernetes name (the pod would not start otherwise)."""
    if not name:
        raise PipelineError("no S3 secret name: pass --s3-secret NAME, the Kubernetes secret holding "
                            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_ENDPOINT_URL/AWS_DEFAULT_REGION "
                            "(see manifests/base/s3-secret.yaml)")
    if len(name) > 253 or not _DNS1123.match(name):
        raise PipelineError(f"--s3-secret {name!r}: not a valid Kubernetes secret name (lowercase "
                            "letters, digits, '-' and '.', at most 253 characters)")
    return name


def check_host(host: str | None, token: str | None = None, timeout_s: float = 5.0) -> str:
    """Resolve the KFP API host (flag or ``KF_PIPELINES_ENDPOINT``) and check its healthz answers."""
    import urllib.error
    import urllib.request

    host = (host or os.environ.get("KF_PIPELINES_ENDPOINT") or "").rstrip("/")
    if not host:
        raise PipelineError("no KFP host: pass --host URL (e.g. http://localhost:8080 after "
                            "`kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80`) or set KF_PIPELINES_ENDPOINT")
    if not re.match(r"^https?://[^/\s]+", host):
        raise PipelineError(f"--host {host!r}: expected an http(s):// URL of the KFP API or UI")
    req = urllib.request.Request(f"{host}/apis/v2beta1/healthz")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            resp.read()
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise PipelineError(f"the KFP API at {host} refused the request (HTTP {e.code}): pass a token with "
                                "--token or KF_PIPELINES_TOKEN (e.g. `kubectl -n <ns> create token default-editor`)") from e
        if e.code == 404:
            raise PipelineError(f"{host} answered but has no KFP v2 API (/apis/v2beta1/healthz: 404); "
                                "point --host at the pipelines endpoint (…/pipeline)") from e
        raise PipelineError(f"the KFP API at {host} is not healthy (HTTP {e.code})") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise PipelineError(f"cannot reach the KFP API at {host}: {reason}; check --host and the network "
                            "(port-forward or gateway) before submitting") from e
    return host


def parse_params(items: list[str]) -> dict[str, Any]:
    """``--param k=v`` values, JSON-parsed where they parse (so ``shards=4`` is an int, as the server
    requires for int parameters), else kept as strings."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise PipelineError(f"--param {item!r}: expected NAME=VALUE")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def run_arguments(spec: dict, recipe: str, overrides: list[str], s3_secret: str,
                  params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate everything about a run's arguments against the package, before any upload."""
    from srcal.config import RecipeError, load_recipe

    if Path(recipe).suffix in (".yaml", ".yml"):
        raise PipelineError(f"--recipe {recipe}: a run in the cluster can only use recipes shipped in the image "
                            "(by name); put the differences in --set overrides")
    try:
        rec = load_recipe(recipe, overrides)
    except RecipeError as e:
        raise PipelineError(f"recipe: {e}") from e
    n = package_rounds(spec)
    if rec.rounds != n:
        raise PipelineError(f"recipe {recipe} asks for rounds={rec.rounds} but the package unrolls {n}; "
                            f"recompile with `srcal pipeline compile --rounds {rec.rounds}` and pass --package")
    args: dict[str, Any] = {"recipe": recipe, "overrides": json.dumps(list(overrides)),
                            "s3_secret": check_secret_name(s3_secret)}
    known = package_parameters(spec)
    for k, v in (params or {}).items():
        if k not in known:
            raise PipelineError(f"--param {k}: the pipeline has no such parameter; known: {sorted(known)}")
        if k in args:
            raise PipelineError(f"--param {k}: set it with its own flag")
        args[k] = v
    return args


def resolve_token(token: str | None = None) -> str | None:
    """The bearer token: the flag, else ``KF_PIPELINES_TOKEN``, else the projected service-account token
    at ``KF_PIPELINES_SA_TOKEN_PATH`` (in-cluster submitters, e.g. manifests/overlays/nightly)."""
    if token or os.environ.get("KF_PIPELINES_TOKEN"):
        return token or os.environ["KF_PIPELINES_TOKEN"]
    path = os.environ.get("KF_PIPELINES_SA_TOKEN_PATH", "")
    if path and os.path.isfile(path):
        return Path(path).read_text().strip() or None
    return None


def client(host: str, token: str | None = None, namespace: str | None = None):
    """A ``kfp.Client`` for ``host`` with the token from :func:`resolve_token`."""
    import kfp

    token = resolve_token(token)
    kw: dict[str, Any] = {"host": host, "existing_token": token}
    if namespace:
        kw["namespace"] = namespace
    return kfp.Client(**kw)


def submit(*, host: str | None, recipe: str, overrides: list[str], s3_secret: str, package: str | None = None,
           experiment: str = "srcal", run_name: str | None = None, params: dict[str, Any] | None = None,
           token: str | None = None, namespace: str | None = None, pipeline_root: str | None = None,
           service_account: str | None = None, enable_caching: bool | None = None) -> dict[str, str]:
    """Create one run of the compiled package; returns ``{"run_id", "url"}``. All checks run first."""
    pkg = Path(package) if package else default_package()
    spec, _ = read_package(pkg)
    args = run_arguments(spec, recipe, overrides, s3_secret, params)
    host = check_host(host, resolve_token(token))
    c = client(host, token, namespace)
    res = c.create_run_from_pipeline_package(
        str(pkg), arguments=args, run_name=run_name, experiment_name=experiment, pipeline_root=pipeline_root,
        enable_caching=enable_caching, service_account=service_account)
    return {"run_id": res.run_id, "url": f"{host}/#/runs/details/{res.run_id}"}


def check_cron(cron: str) -> str:
    """KFP schedules use robfig/cron with a leading seconds field: six fields, e.g. ``0 0 2 * * *``
    (02:00 daily). A five-field crontab would be read shifted by one field, so it is refused."""
    fields = cron.split()
    if len(fields) == 5:
        raise PipelineError(f"--cron {cron!r}: KFP cron has six fields, seconds first; did you mean '0 {cron}'?")
    if len(fields) != 6:
        raise PipelineError(f"--cron {cron!r}: expected six fields (sec min hour day month weekday), e.g. '0 0 2 * * *'")
    return cron


def schedule(*, host: str | None, recipe: str, overrides: list[str], s3_secret: str, cron: str,
             package: str | None = None, experiment: str = "srcal-scheduled", job_name: str = "srcal-nightly",
             pipeline_name: str = "srcal", version_name: str | None = None, params: dict[str, Any] | None = None,
             token: str | None = None, namespace: str | None = None, max_concurrency: int = 1,
             enable_caching: bool = False) -> dict[str, str]:
    """Upload the package as a new version of pipeline ``pipeline_name`` and create an enabled recurring run
    on that version, replacing (deleting) earlier recurring runs of the same ``job_name`` in the
    experiment, so re-running this command (e.g. from CI on each release) moves the schedule to the new
    version instead of adding a second one. (kfp 2.17's Client requires a version id; a version-pinned
    recurring run embeds its workflow, so a new image only reaches it through a new version.)

    Caching is off by default: a schedule exists to re-run, and cached steps would replay old outputs
    when the inputs are the same URIs with new contents.
    """
    import datetime as dt

    pkg = Path(package) if package else default_package()
    spec, _ = read_package(pkg)
    args = run_arguments(spec, recipe, overrides, s3_secret, params)
    check_cron(cron)
    host = check_host(host, resolve_token(token))
    c = client(host, token, namespace)
    version_name = version_name or "v-" + dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    pipeline_id = c.get_pipeline_id(pipeline_name)
    if pipeline_id is None:
        p = c.upload_pipeline(str(pkg), pipeline_name=pipeline_name)
        pipeline_id = p.pipeline_id
    version = c.upload_pipeline_version(str(pkg), pipeline_version_name=version_name, pipeline_id=pipeline_id)
    exp = c.create_experiment(experiment, namespace=namespace)
    old = c.list_recurring_runs(experiment_id=exp.experiment_id, page_size=100, namespace=namespace)
    replaced = [r.recurring_run_id for r in (old.recurring_runs or []) if r.display_name == job_name]
    job = c.create_recurring_run(
        experiment_id=exp.experiment_id, job_name=job_name, cron_expression=cron, max_concurrency=max_concurrency,
        no_catchup=True, params=args, pipeline_id=pipeline_id, version_id=version.pipeline_version_id,
        enabled=True, enable_caching=enable_caching)
    for rid in replaced:  # only after the new one exists: a failure above leaves the old schedule running
        c.delete_recurring_run(rid)
    return {"recurring_run_id": job.recurring_run_id, "pipeline_id": pipeline_id, "version": version_name,
            "replaced": replaced, "url": f"{host}/#/recurringrun/details/{job.recurring_run_id}"}
