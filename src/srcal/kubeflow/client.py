"""``srcal pipeline compile|submit|schedule``: the Kubeflow client side, above ``components/`` and
``pipelines/`` (it builds the pipeline from them; the components call :mod:`srcal.kubeflow.steps` in the image).

Every check that can fail (unknown recipe, a round count the compiled package does not have, a missing or
malformed S3 secret name, a bad cron, an unreachable host) runs before anything is uploaded, and raises
:class:`PipelineError` with what to change. ``components`` and ``pipelines`` ship in the wheel beside
``srcal`` (pyproject.toml), so they import like any package; kfp is imported inside functions.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from srcal.kubeflow.steps import PACKAGE_NAME, PipelineError


# ========================================================================================= compile


def default_package() -> Path:
    """The compiled YAML beside the pipeline definition (``pipelines/srcal_pipeline.yaml``, package data)."""
    import pipelines

    return Path(pipelines.__file__).resolve().parent / PACKAGE_NAME


def build_pipeline(recipe: str | int = "tiny", rounds: int | None = None, overrides: list[str] | tuple = ()):
    """The pipeline function for ``recipe``'s plan (``srcal.graph``), ``rounds`` overriding its round count
    (imports kfp and the components). An int first argument is a round count of the tiny recipe (the
    signature before the plan existed)."""
    from srcal.config import RecipeError

    if isinstance(recipe, int):
        recipe, rounds = "tiny", recipe
    from pipelines.srcal_pipeline import build_pipeline as build

    try:
        return build(recipe, rounds, overrides)
    except (ValueError, RecipeError) as e:
        raise PipelineError(str(e)) from e


def retag_images(text: str, image_tag: str | None = None, registry: str | None = None) -> str:
    """Point the compiled YAML at images built by ``images/build.sh`` (``<registry>/srcal-{train,vllm}:<tag>``)."""
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
