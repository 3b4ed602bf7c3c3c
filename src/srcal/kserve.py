"""Serving the R-Scorer judge for the pipeline's rounds: a KServe InferenceService, or a process.

``judge_serving`` (a pipeline parameter) picks one of:

* ``kserve``: :func:`serve_judge` creates an InferenceService with the vLLM ServingRuntime
  (``manifests/base/vllm-servingruntime.yaml``, OpenAI-compatible) whose ``storageUri`` is the judge
  artifact's S3 URI, waits for ``Ready`` and returns ``<status.address.url>/v1``; the pipeline's exit
  handler calls :func:`teardown_judge`, which deletes it (a 404 is fine: nothing to tear down).
* ``in-step``: no endpoint; each score step loads the judge from its artifact in-process (HF). This is
  what kfp.local and clusters without KServe use.
* ``in-step-vllm``: each score step starts a vLLM OpenAI server process on the judge artifact
  (:func:`local_openai_server`) and scores against it; single-node clusters with the vLLM image.

Talks to the API server with the ``kubernetes`` client (in-cluster service account, or kubeconfig),
through ``CustomObjectsApi`` on ``serving.kserve.io/v1beta1``; no KServe SDK needed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("srcal.kserve")

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
MODES = ("kserve", "in-step", "in-step-vllm")
_NS_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class ServeError(RuntimeError):
    """The judge endpoint could not be created or did not become ready; the message says why."""


def isvc_name(run_id: str) -> str:
    """A DNS-1035 name unique to the run (KFP run ids are UUIDs): ``srcal-judge-<first 12 id chars>``."""
    tail = re.sub(r"[^a-z0-9]", "", str(run_id).lower())[:12] or "local"
    return f"srcal-judge-{tail}"


def current_namespace() -> str:
    """The namespace the step runs in (service-account file), else ``SRCAL_NAMESPACE``, else ``default``."""
    if os.path.isfile(_NS_FILE):
        return Path(_NS_FILE).read_text().strip()
    return os.environ.get("SRCAL_NAMESPACE", "default")


def isvc_manifest(name: str, storage_uri: str, *, runtime: str = "srcal-vllm",
                  service_account: str = "srcal-kserve-s3", accelerator_type: str = "nvidia.com/gpu",
                  gpus: int = 1, node_selector: dict | None = None, tolerations: list | None = None,
                  memory: str = "24Gi", labels: dict | None = None) -> dict:
    """The InferenceService for the judge: vLLM runtime, model copied from ``storage_uri`` to /mnt/models,
    GPUs, node selector and tolerations of the GPU pool. The service account carries the S3 secret and
    the ``serving.kserve.io/s3-*`` annotations the storage initializer reads (manifests/base)."""
    if not storage_uri.startswith(("s3://", "gs://", "pvc://", "hf://", "https://")):
        raise ServeError(f"judge artifact URI {storage_uri!r} is not remote storage KServe can download "
                         "(s3://…): run the pipeline with an S3 pipeline_root, or judge_serving=in-step")
    limits = {"memory": memory}
    if gpus:
        limits[accelerator_type] = str(gpus)
    predictor: dict = {
        "serviceAccountName": service_account,
        "model": {
            "modelFormat": {"name": "vLLM"},
            "runtime": runtime,
            "storageUri": storage_uri.rstrip("/") + "/",
            "resources": {"limits": limits, "requests": dict(limits)},
        },
    }
    if node_selector:
        predictor["nodeSelector"] = dict(node_selector)
    if tolerations:
        predictor["tolerations"] = list(tolerations)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "srcal",
                                              "app.kubernetes.io/component": "r-scorer", **(labels or {})},
                     # Pipeline pods run without the Istio sidecar; keep the predictor reachable from them.
                     "annotations": {"sidecar.istio.io/inject": "false"}},
        "spec": {"predictor": predictor},
    }


def _api():
    """CustomObjectsApi from the in-cluster service account, else the local kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        # KUBECONFIG read now: the client reads it once, at import, for its default
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    return client.CustomObjectsApi()


def _status_code(e: Exception) -> int | None:
    return getattr(e, "status", None)


def create(manifest: dict, namespace: str, api=None) -> None:
    """Create the InferenceService; one left over with the same name (a retried step) is replaced."""
    api = api or _api()
    name = manifest["metadata"]["name"]
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    except Exception as e:  # kubernetes.client.ApiException
        if _status_code(e) == 409:
            log.info("InferenceService %s/%s exists (a retried step): replacing it", namespace, name)
            delete(name, namespace, api=api, wait_s=120)
            api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
        elif _status_code(e) == 403:
            raise ServeError(f"not allowed to create InferenceServices in {namespace}: bind the pipeline's "
                             "service account to manifests/base/rbac.yaml (Role srcal-pipeline-runner)") from e
        else:
            raise


def ready_url(obj: dict) -> str | None:
    """``status.address.url`` (or ``status.url``) once the ``Ready`` condition is ``True``, else None."""
    status = obj.get("status") or {}
    conds = {c.get("type"): c for c in status.get("conditions") or []}
    if (conds.get("Ready") or {}).get("status") != "True":
        return None
    return (status.get("address") or {}).get("url") or status.get("url")


def wait_ready(name: str, namespace: str, timeout_s: float = 1800, poll_s: float = 10, api=None) -> str:
    """Poll until the InferenceService is Ready; return its URL. On timeout, the error lists the last
    conditions (image pull, GPU scheduling and storage errors show there)."""
    api = api or _api()
    deadline = time.monotonic() + timeout_s
    last: dict = {}
    while True:
        last = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        url = ready_url(last)
        if url:
            return url
        if time.monotonic() >= deadline:
            conds = [(c.get("type"), c.get("status"), c.get("reason"), c.get("message"))
                     for c in (last.get("status") or {}).get("conditions") or []]
            raise ServeError(f"InferenceService {namespace}/{name} not Ready after {timeout_s:.0f}s; "
                             f"conditions: {conds or 'none yet'}")
        time.sleep(poll_s)


def delete(name: str, namespace: str, api=None, wait_s: float = 0) -> bool:
    """Delete the InferenceService; False if it did not exist. With ``wait_s``, wait until it is gone."""
    api = api or _api()
    try:
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except Exception as e:
        if _status_code(e) == 404:
            return False
        raise
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except Exception as e:
            if _status_code(e) == 404:
                break
            raise
        time.sleep(2)
    return True


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ServeError(f"judge_serving={mode!r}: expected one of {MODES}")
    return mode


def serve_judge(mode: str, name: str, storage_uri: str, *, runtime: str, service_account: str,
                accelerator_type: str, gpus: int, node_selector: dict, tolerations: list,
                ready_timeout_s: float, namespace: str | None = None, api=None) -> str:
    """What the rscorer-serve component does: the judge's OpenAI base URL (``…/v1``), or ``""`` when the
    score steps serve the judge themselves."""
    if _check_mode(mode) != "kserve":
        print(f"judge_serving={mode}: the score steps serve the judge themselves; no endpoint created")
        return ""
    ns = namespace or current_namespace()
    manifest = isvc_manifest(name, storage_uri, runtime=runtime, service_account=service_account,
                             accelerator_type=accelerator_type, gpus=gpus, node_selector=node_selector,
                             tolerations=tolerations)
    create(manifest, ns, api=api)
    url = wait_ready(name, ns, timeout_s=ready_timeout_s, api=api)
    print(f"judge endpoint {ns}/{name} ready at {url}")
    return url.rstrip("/") + "/v1"


def teardown_judge(mode: str, name: str, namespace: str | None = None, api=None) -> bool:
    """What the exit handler does: delete this run's judge InferenceService (if any)."""
    if _check_mode(mode) != "kserve":
        return False
    ns = namespace or current_namespace()
    gone = delete(name, ns, api=api)
    print(f"InferenceService {ns}/{name}: {'deleted' if gone else 'was not there'}")
    return gone


# ------------------------------------------------------------------------------- in-step serving


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vllm_server_argv(model_dir: str, port: int, served_name: str = "judge", extra: list[str] | None = None,
                     python: str | None = None) -> list[str]:
    """The same server the ServingRuntime runs, as a local process: with the vLLM environment's python
    (``srcal.vllm_engine.find_vllm_python``: ``$SRCAL_VLLM_PYTHON`` or ``.venv-vllm``), else this one
    (the vLLM image, where vLLM is installed beside srcal)."""
    from srcal.vllm_engine import find_vllm_python

    python = python or str(find_vllm_python() or sys.executable)
    return [python, "-m", "vllm.entrypoints.openai.api_server", f"--model={model_dir}",
            f"--served-model-name={served_name}", "--host=127.0.0.1", f"--port={port}", *(extra or [])]


@contextlib.contextmanager
def serve_judge_locally(judge_dir: str | Path, *, gpu: bool, log_path: str | None = None,
                        timeout_s: float = 600) -> Iterator[str]:
    """Serve a trained judge artifact with vLLM's OpenAI server for the duration of the block; yield its
    ``…/v1`` URL. Used by the pipeline's ``in-step-vllm`` score steps and by ``srcal run`` when the recipe
    says ``rscorer.serve: openai`` without a URL (the judge it just trained, served as a real endpoint).

    Without a GPU, vLLM-CPU needs fp32, eager mode and its CPU environment
    (:func:`srcal.vllm_engine.vllm_cpu_env`).
    """
    from srcal.vllm_engine import vllm_cpu_env

    port = free_port()
    # vLLM refuses a --max-model-len above the checkpoint's max_position_embeddings (tiny judges have 512).
    cfg = json.loads((Path(judge_dir) / "config.json").read_text()) if (Path(judge_dir) / "config.json").exists() else {}
    max_len = min(1024, int(cfg.get("max_position_embeddings") or 1024))
    cpu = [] if gpu else ["--dtype=float32", "--enforce-eager", f"--max-model-len={max_len}"]
    argv = vllm_server_argv(str(judge_dir), port, extra=cpu)
    with local_openai_server(argv, port, env=None if gpu else vllm_cpu_env(), log_path=log_path,
                             timeout_s=timeout_s) as url:
        yield url


@contextlib.contextmanager
def local_openai_server(argv: list[str], port: int, *, ready_path: str = "/v1/models", timeout_s: float = 600,
                        log_path: str | None = None, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run an OpenAI-compatible server process for the duration of the block; yield ``http://…/v1``.

    Waits until ``ready_path`` answers 200 (model loaded), fails fast if the process exits, and always
    stops it (terminate, then kill after 30 s) so a failing score step leaves no server behind.
    """
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise ServeError(f"judge server exited with code {proc.returncode} before it was ready: "
                                 f"{' '.join(argv)}" + (f" (log: {log_path})" if log_path else ""))
            try:
                with urllib.request.urlopen(base + ready_path, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ServeError(f"judge server not ready on {base}{ready_path} after {timeout_s:.0f}s")
            time.sleep(0.5)
        yield base + "/v1"
    finally:
        if proc.poll() is None:  # the whole session: vLLM's engine core is a child process
            import signal

            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
        if log_path:
            out.close()
