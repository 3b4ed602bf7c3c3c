"""Serving the R-Scorer judge for the pipeline's rounds: a KServe InferenceService, or a process.

``judge_serving`` (a pipeline parameter) picks one of:

* ``kserve``: :func:`serve_judge` creates an InferenceService with the vLLM ServingRuntime
  (``manifests/base/vllm-servingruntime.yaml``, OpenAI-compatible) whose ``storageUri`` is the judge
  artifact's S3 URI, waits for ``Ready`` and returns ``<status.address.url>/v1``; the pipeline's exit
  handler calls :func:`teardown_judge`, which deletes it (a 404 is fine: nothing to tear down).
* ``in-step``: no endpoint; each score step loads the judge from its artifact in-process (HF). This is
  what kfp.local and clusters without KServe use.
* ``in-step-vllm``: each score step starts a vLLM OpenAI server process on the judge artifact
  (:func:`srcal.serve.servers.serve_judge_locally`) and scores against it; single-node clusters with the
  vLLM image.

Talks to the API server with the ``kubernetes`` client (in-cluster service account, or kubeconfig),
through ``CustomObjectsApi`` on ``serving.kserve.io/v1beta1``; no KServe SDK needed.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

from srcal.errors import ServeError

log = logging.getLogger("srcal.kubeflow.kserve")

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
MODES = ("kserve", "in-step", "in-step-vllm")
_NS_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


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
    from srcal.kubeflow.kube import custom_objects_api

    return custom_objects_api()


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
