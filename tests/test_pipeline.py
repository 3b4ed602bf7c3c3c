"""The compiled KFP pipeline (structure, GPU placement, secrets, staleness) and the submit/schedule commands.

Structure tests read the checked-in YAML the way the KFP backend does (tasks per DAG, executor and
platform config per task). Submission runs against a stand-in KFP REST server on loopback (no KFP API
server can run here): it proves what kfp.Client sends and that bad input fails before any upload.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from srcal.kubeflow import steps as kp

from srcal.kubeflow import client as kpc
from http_utils import send_json

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pipelines" / "srcal_pipeline.yaml"
GPU_KINDS = {"base", "rft", "eval", "search", "rscorer-train", "align"}


@pytest.fixture(scope="module")
def spec():
    return kpc.read_package(PACKAGE)


def _kind(component_ref: str) -> str:
    """``comp-search-merge-op-2`` -> ``search-merge``; ``comp-for-loop-3`` -> ``for-loop``."""
    name = re.sub(r"-\d+$", "", component_ref.removeprefix("comp-"))
    return name.removesuffix("-op")


def _tasks(spec_pair):
    """(kind, display name, task, executor label) for every task, nested DAGs included."""
    spec, _ = spec_pair
    out = []
    for _, name, task in kpc.iter_tasks(spec):
        comp = spec["components"][task["componentRef"]["name"]]
        out.append((_kind(task["componentRef"]["name"]), task["taskInfo"]["name"], task, comp.get("executorLabel")))
    return out


def test_committed_yaml_is_fresh(tmp_path):
    """Recompiling the pipeline gives the checked-in YAML byte for byte (else: `srcal pipeline compile`)."""
    fresh = kpc.compile_pipeline(tmp_path / "p.yaml")
    assert fresh.read_text() == PACKAGE.read_text(), (
        "pipelines/srcal_pipeline.yaml is stale: run `srcal pipeline compile` and commit it")


def test_task_counts_by_kind(spec):
    counts = Counter(kind for kind, *_ in _tasks(spec))
    assert counts == {
        "data": 1, "base": 1, "rft": 1, "eval": 5, "rscorer-data": 1, "rscorer-train": 1, "rscorer-serve": 1,
        "rscorer-teardown": 1, "shard-indexes": 3, "search": 4, "search-merge": 3, "score": 3, "curate": 3,
        "align": 3, "report": 1, "export": 1,  # search: rscorer-search + one per round's ParallelFor
        "exit-handler": 1, "for-loop": 3,  # DAG tasks
    }


def test_three_rounds_chain_through_the_policy(spec):
    """Round k's search and align read round k-1's aligned policy (round 1: the RFT model); tasks are named
    by their plan step (srcal.graph.task_name). tests/test_graph.py checks every edge for every recipe."""
    pipeline_spec, _ = spec
    display = {name: t["taskInfo"]["name"] for _, name, t in kpc.iter_tasks(pipeline_spec)}
    by_display = {t["taskInfo"]["name"]: t for _, _, t in kpc.iter_tasks(pipeline_spec)}
    for k in (1, 2, 3):
        assert {f"round{k}-search-shard", f"round{k}-search", f"round{k}-score", f"round{k}-curate",
                f"round{k}-align", f"eval-round{k}"} <= set(by_display)
    expected = {1: "rft", 2: "round1-align", 3: "round2-align"}
    for k, want in expected.items():
        src = by_display[f"round{k}-align"]["inputs"]["artifacts"]["policy"]["taskOutputArtifact"]
        assert display[src["producerTask"]] == want, (k, src)
        # the searches of round k sit in the ParallelFor; their policy enters the loop from the same producer
        loop = by_display[f"round{k}-search-shards"]
        producers = {display[a["taskOutputArtifact"]["producerTask"]] for a in loop["inputs"]["artifacts"].values()}
        assert producers == {"data", "base", want}, k
    # the judge's data gets the RFT policy's candidates on the rft split (issue 12 bug 1: it had none)
    src = by_display["rscorer-data"]["inputs"]["artifacts"]["candidates"]["taskOutputArtifact"]
    assert display[src["producerTask"]] == "rscorer-search"


def test_gpu_settings_on_exactly_the_gpu_steps(spec):
    pipeline_spec, platform = spec
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    containers = pipeline_spec["deploymentSpec"]["executors"]
    seen_gpu = set()
    for kind, display, task, label in _tasks(spec):
        if label is None:  # DAG tasks have no executor
            continue
        k8s = executors[label]
        resources = containers[label]["container"].get("resources", {})
        if kind == "score":  # placed by its own parameters (in-step judge serving needs a GPU there)
            assert resources["accelerator"]["resourceCount"].endswith("score_gpus']}}")
            assert k8s["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"].endswith("score_node_selector")
            assert k8s["tolerations"][0]["tolerationJson"]["componentInputParameter"].endswith("score_tolerations")
            continue
        resources = containers[label]["container"].get("resources", {})
        is_gpu = kind in GPU_KINDS
        has_accel = "accelerator" in resources
        tolerations = k8s.get("tolerations", [])
        selector = k8s.get("nodeSelector", {}).get("nodeSelectorJson", {}).get("componentInputParameter", "")
        shm = [m for m in k8s.get("emptyDirMounts", []) if m["mountPath"] == "/dev/shm"]
        assert has_accel == is_gpu, display
        assert bool(tolerations) == is_gpu, display
        assert bool(shm) == is_gpu, display
        assert selector.endswith("gpu_node_selector" if is_gpu else "cpu_node_selector"), (display, selector)
        if is_gpu:
            seen_gpu.add(kind)
            acc = resources["accelerator"]
            assert acc["resourceType"] == "{{$.inputs.parameters['pipelinechannel--accelerator_type']}}"
            assert re.fullmatch(r"\{\{\$\.inputs\.parameters\['pipelinechannel--\w+_gpus'\]\}\}",
                                acc["resourceCount"]), acc
            assert shm[0]["medium"] == "Memory"
            assert tolerations[0]["tolerationJson"]["componentInputParameter"].endswith("gpu_tolerations")
    assert seen_gpu == GPU_KINDS


def test_every_parameter_a_dag_reads_is_declared(spec):
    """Inside each DAG (root, exit handler, loops) a task may only read parameters that DAG declares;
    the backend (and kfp.local) cannot resolve anything else."""
    pipeline_spec, _ = spec
    dags = {"root": pipeline_spec["root"]} | {n: c for n, c in pipeline_spec["components"].items() if "dag" in c}
    for name, comp in dags.items():
        declared = set(comp.get("inputDefinitions", {}).get("parameters", {}))
        for task_name, task in comp["dag"]["tasks"].items():
            for arg, value in task.get("inputs", {}).get("parameters", {}).items():
                if "componentInputParameter" in value:
                    assert value["componentInputParameter"] in declared, (name, task_name, arg)


def test_every_step_reads_s3_credentials_from_the_secret_and_none_are_in_the_yaml(spec):
    pipeline_spec, platform = spec
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(pipeline_spec["deploymentSpec"]["executors"])
    for label, k8s in executors.items():
        (sec,) = k8s["secretAsEnv"]
        assert sec["secretNameParameter"]["componentInputParameter"].endswith("s3_secret"), label
        assert {e["envVar"] for e in sec["keyToEnv"]} >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    text = PACKAGE.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}|aws_secret_access_key\s*[:=]\s*\S", text, re.IGNORECASE)


def test_retries_and_caching(spec):
    by_kind: dict[str, list[dict]] = {}
    for kind, _, task, _ in _tasks(spec):
        by_kind.setdefault(kind, []).append(task)
    for kind in ("data", "search", "score", "eval", "rscorer-serve", "rscorer-teardown", "export"):
        for t in by_kind[kind]:
            assert t["retryPolicy"]["maxRetryCount"] == 2, kind
            assert t["retryPolicy"]["backoffFactor"] == 2.0
    for kind in ("rft", "align", "curate", "rscorer-train"):  # not transient: a retry would only repeat the work
        assert all("retryPolicy" not in t for t in by_kind[kind]), kind
    # The endpoint lifecycle and the export must run every time; everything else may be cached.
    for kind, tasks in by_kind.items():
        if kind in ("exit-handler", "for-loop"):
            continue
        for t in tasks:
            want = kind not in ("rscorer-serve", "rscorer-teardown", "export")
            assert t["cachingOptions"].get("enableCache", False) == want, kind


def test_teardown_is_the_exit_handler(spec):
    pipeline_spec, _ = spec
    root = pipeline_spec["root"]["dag"]["tasks"]
    assert set(root) == {"exit-handler-1", "rscorer-teardown-op"}
    teardown = root["rscorer-teardown-op"]
    assert teardown["dependentTasks"] == ["exit-handler-1"]
    assert teardown["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    # The teardown finds the InferenceService by the run id, not by an output of a task inside the handler.
    assert teardown["inputs"]["parameters"]["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"


def test_components_run_the_project_image_without_pip(spec):
    pipeline_spec, _ = spec
    for label, ex in pipeline_spec["deploymentSpec"]["executors"].items():
        c = ex["container"]
        assert re.fullmatch(r"ghcr\.io/srcal/srcal-(train|vllm):v\d+\.\d+\.\d+", c["image"]), label
        assert "pip install" not in " ".join(c.get("command", []) + c.get("args", [])), label


def test_parameters(spec):
    params = kpc.package_parameters(spec[0])
    assert {"recipe", "overrides", "base_model_uri", "data_uri", "shards", "judge_serving", "s3_secret",
            "s3_prefix", "accelerator_type", "gpu_node_selector", "gpu_tolerations", "cpu_node_selector",
            "rft_gpus", "search_gpus", "rscorer_gpus", "judge_gpus", "align_gpus", "eval_gpus", "base_gpus",
            "train_nodes", "score_gpus", "score_node_selector", "score_tolerations"} <= set(params)
    # by default the score steps ask for no GPU and no GPU toleration (they call the KServe judge)
    assert params["score_gpus"]["defaultValue"] == 0 and params["score_tolerations"]["defaultValue"] == []
    assert params["recipe"]["defaultValue"] == "tiny"
    assert params["shards"]["parameterType"] == "NUMBER_INTEGER"


def test_the_pipeline_is_compiled_for_a_recipe(tmp_path):
    """``--recipe``: the DAG is that recipe's plan and the run's ``recipe`` parameter defaults to it."""
    out = kpc.compile_pipeline(tmp_path / "llava.yaml", recipe="llava-1.5-7b")
    spec, _ = kpc.read_package(out)
    assert kpc.package_parameters(spec)["recipe"]["defaultValue"] == "llava-1.5-7b"
    assert kpc.package_rounds(spec) == 3
    with pytest.raises(kp.PipelineError, match="not found"):
        kpc.compile_pipeline(tmp_path / "x.yaml", recipe="no-such-recipe")


def test_the_cli_compiles_for_the_recipe_it_is_given(tmp_path, capsys):
    """``srcal pipeline compile --recipe R --set …``: the recipe's rounds unless ``--rounds`` says otherwise."""
    from srcal.cli import main

    assert main(["pipeline", "compile", "--recipe", "llava-1.5-7b", "--set", "rounds=2",
                 "--output", str(tmp_path / "two.yaml")]) == 0
    spec, _ = kpc.read_package(tmp_path / "two.yaml")
    assert kpc.package_rounds(spec) == 2 and kpc.package_parameters(spec)["recipe"]["defaultValue"] == "llava-1.5-7b"
    assert main(["pipeline", "compile", "--recipe", "llava-1.5-7b", "--rounds", "1",
                 "--output", str(tmp_path / "one.yaml")]) == 0
    assert kpc.package_rounds(kpc.read_package(tmp_path / "one.yaml")[0]) == 1
    assert capsys.readouterr().out.split() == [str(tmp_path / "two.yaml"), str(tmp_path / "one.yaml")]


def test_rounds_are_a_compile_option(tmp_path):
    one = kpc.compile_pipeline(tmp_path / "one.yaml", rounds=1)
    spec, _ = kpc.read_package(one)
    assert kpc.package_rounds(spec) == 1
    with pytest.raises(kp.PipelineError, match="1 to 3 rounds"):
        kpc.compile_pipeline(tmp_path / "four.yaml", rounds=4)


def test_retag_points_every_step_at_the_built_images(tmp_path):
    out = kpc.compile_pipeline(tmp_path / "p.yaml", image_tag="abc1234", registry="registry.example/ml")
    spec = next(yaml.safe_load_all(out.read_text()))
    images = {ex["container"]["image"] for ex in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example/ml/srcal-train:abc1234", "registry.example/ml/srcal-vllm:abc1234"}
    assert "ghcr.io/srcal" not in out.read_text()  # the TrainJob image env follows too


# ------------------------------------------------------------------------------ component-side helpers


def test_parse_overrides():
    assert kp.parse_overrides("") == []
    assert kp.parse_overrides('["rounds=1", "align.beta=0.2"]') == ["rounds=1", "align.beta=0.2"]
    with pytest.raises(kp.PipelineError, match="not JSON"):
        kp.parse_overrides("rounds=1")
    with pytest.raises(kp.PipelineError, match="key=value"):
        kp.parse_overrides('["rounds"]')


def test_numeric_leaves_flattens_for_the_ui():
    got = kp.numeric_leaves({"b": {"acc": 0.5, "n": 3, "ok": True, "nan": float("nan")}, "a": "x", "l": [1]})
    assert got == {"b.acc": 0.5, "b.n": 3.0, "l.0": 1.0}
    evals = {"recipe": "tiny", "rounds": [{"name": "rft", "n": 300, "accuracy": 0.71}]}
    assert kp.numeric_leaves(evals) == {"rounds.rft.n": 300.0, "rounds.rft.accuracy": 0.71}


# ------------------------------------------------------------------------ submit / schedule (stand-in)


class _StandInKFP:
    """A loopback HTTP server answering the KFP v2beta1 REST calls kfp.Client makes; records them."""

    def __init__(self):
        self.calls: list[tuple[str, str, bytes]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _reply(self, obj, code=200):
                send_json(self, obj, code)

            def _handle(self, method):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                outer.calls.append((method, self.path, body))
                path = self.path.split("?")[0]
                if path == "/apis/v2beta1/healthz":
                    return self._reply({"multi_user": False})
                if path == "/apis/v2beta1/experiments" and method == "GET":
                    return self._reply({"experiments": [], "total_size": 0})
                if path == "/apis/v2beta1/experiments" and method == "POST":
                    return self._reply({"experiment_id": "exp-1", **json.loads(body)})
                if path == "/apis/v2beta1/runs" and method == "POST":
                    return self._reply({"run_id": "run-123", **json.loads(body)})
                if path == "/apis/v2beta1/pipelines" and method == "GET":
                    return self._reply({"pipelines": [], "total_size": 0})
                if path == "/apis/v2beta1/pipelines/upload":
                    return self._reply({"pipeline_id": "pipe-1", "display_name": "srcal"})
                if path == "/apis/v2beta1/pipelines/upload_version":
                    return self._reply({"pipeline_id": "pipe-1", "pipeline_version_id": "ver-1"})
                if path == "/apis/v2beta1/recurringruns" and method == "POST":
                    return self._reply({"recurring_run_id": "rr-1", **json.loads(body)})
                if path == "/apis/v2beta1/recurringruns" and method == "GET":
                    return self._reply({"recurringRuns": [
                        {"recurring_run_id": "rr-old", "display_name": "srcal-nightly"},
                        {"recurring_run_id": "rr-other", "display_name": "someone-else"}], "total_size": 2})
                if path.startswith("/apis/v2beta1/recurringruns/") and method == "DELETE":
                    return self._reply({})
                return self._reply({"error": f"stand-in: no route {method} {path}"}, 404)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_DELETE(self):
                self._handle("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def uploads(self):
        return [c for c in self.calls if c[0] == "POST"]


@pytest.fixture
def kfp_server(monkeypatch, tmp_path):
    import kfp

    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp" / "context.json"))
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    monkeypatch.delenv("KF_PIPELINES_TOKEN", raising=False)
    s = _StandInKFP()
    yield s
    s.server.shutdown()


def test_submit_creates_a_run_with_typed_arguments(kfp_server):
    res = kpc.submit(host=kfp_server.url, recipe="tiny", overrides=["align.beta=0.2"], s3_secret="team-s3",
                    params={"shards": 4, "judge_serving": "in-step"}, run_name="ci-abc", experiment="ci")
    assert res == {"run_id": "run-123", "url": f"{kfp_server.url}/#/runs/details/run-123"}
    (run,) = [json.loads(b) for m, p, b in kfp_server.calls if p.startswith("/apis/v2beta1/runs")]
    params = run["runtime_config"]["parameters"]
    assert params["recipe"] == "tiny" and params["s3_secret"] == "team-s3"
    assert json.loads(params["overrides"]) == ["align.beta=0.2"]
    assert params["shards"] == 4  # an int, as the server requires for int parameters
    assert run["display_name"] == "ci-abc" and run["experiment_id"] == "exp-1"
    spec = run["pipeline_spec"]  # the compiled package itself (pipeline + platform spec)
    assert spec["pipeline_spec"]["pipelineInfo"]["name"] == "srcal" and "platform_spec" in spec


def test_schedule_uploads_a_version_and_an_enabled_recurring_run(kfp_server):
    res = kpc.schedule(host=kfp_server.url, recipe="tiny", overrides=[], s3_secret="srcal-s3", cron="0 0 2 * * *",
                      version_name="v-test")
    assert res["recurring_run_id"] == "rr-1" and res["pipeline_id"] == "pipe-1"
    paths = [p.split("?")[0] for m, p, _ in kfp_server.uploads()]
    assert paths[:2] == ["/apis/v2beta1/pipelines/upload", "/apis/v2beta1/pipelines/upload_version"]
    (rr,) = [json.loads(b) for m, p, b in kfp_server.calls if m == "POST" and p.startswith("/apis/v2beta1/recurr")]
    assert rr["mode"] == "ENABLE"
    assert rr["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * *"
    assert rr["no_catchup"] is True and int(rr["max_concurrency"]) == 1
    assert rr["pipeline_version_reference"] == {"pipeline_id": "pipe-1", "pipeline_version_id": "ver-1"}
    # the earlier schedule of the same name is replaced, after the new one exists; others are left alone
    assert res["replaced"] == ["rr-old"]
    assert [p for m, p, _ in kfp_server.calls if m == "DELETE"] == ["/apis/v2beta1/recurringruns/rr-old"]
    assert [m for m, p, _ in kfp_server.calls if "recurringruns" in p] == ["GET", "POST", "DELETE"]


@pytest.mark.parametrize("kwargs, message", [
    ({"recipe": "no-such-recipe"}, "not found"),
    ({"overrides": ["align.bogus=1"]}, "bogus"),
    ({"overrides": ["rounds=2"]}, "rounds=2 but the package unrolls 3"),
    ({"s3_secret": ""}, "no S3 secret name"),
    ({"s3_secret": "Bad_Name"}, "not a valid Kubernetes secret name"),
    ({"params": {"no_such": 1}}, "no such parameter"),
])
def test_bad_submissions_fail_before_any_upload(kfp_server, kwargs, message):
    args = {"host": kfp_server.url, "recipe": "tiny", "overrides": [], "s3_secret": "srcal-s3", **kwargs}
    with pytest.raises(kp.PipelineError, match=message):
        kpc.submit(**args)
    assert kfp_server.calls == []  # not even a healthz: the host is checked last


def test_unreachable_host_fails_before_any_upload():
    from srcal.run.distributed import free_port

    with pytest.raises(kp.PipelineError, match="cannot reach the KFP API"):
        kpc.submit(host=f"http://127.0.0.1:{free_port()}", recipe="tiny", overrides=[], s3_secret="srcal-s3")
    with pytest.raises(kp.PipelineError, match="no KFP host"):
        kpc.submit(host="", recipe="tiny", overrides=[], s3_secret="srcal-s3")


def test_a_host_without_the_kfp_api_is_named(kfp_server):
    with pytest.raises(kp.PipelineError, match="no KFP v2 API"):
        kpc.check_host(kfp_server.url + "/not-kfp")


def test_five_field_cron_is_refused_with_the_fix(kfp_server):
    with pytest.raises(kp.PipelineError, match="did you mean '0 0 2 \\* \\* \\*'"):
        kpc.schedule(host=kfp_server.url, recipe="tiny", overrides=[], s3_secret="srcal-s3", cron="0 2 * * *")
    assert kfp_server.uploads() == []


def test_cli_submit_prints_the_run(kfp_server, capsys):
    from srcal.cli import main

    rc = main(["pipeline", "submit", "--host", kfp_server.url, "--set", "align.beta=0.3", "--param", "shards=2"])
    assert rc == 0
    # stdout is exactly the JSON result (kfp.Client's own chatter goes to stderr), so CI can parse it
    assert json.loads(capsys.readouterr().out)["run_id"] == "run-123"
    rc = main(["pipeline", "submit", "--host", kfp_server.url, "--recipe", "nope"])
    assert rc == 2 and "not found" in capsys.readouterr().err


def test_ci_workflow_compiles_and_submits_on_a_tag():
    """The example workflow triggers on v* tags, checks staleness, and its srcal commands parse."""
    import shlex

    from srcal.cli import build_parser

    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "pipeline.yaml").read_text())
    on = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads the key `on` as a boolean
    assert on["push"]["tags"] == ["v*"]
    runs = [s["run"] for job in wf["jobs"].values() for s in job["steps"] if "run" in s]
    assert any("git diff --exit-code pipelines/srcal_pipeline.yaml" in r for r in runs)
    commands = []
    for r in runs:
        text = re.sub(r"\$\{\{[^}]*\}\}|\$\([^)]*\)|\"\$\w+\"", "X", r.replace("\\\n", " "))
        for line in text.splitlines():
            if line.strip().startswith("srcal pipeline"):
                commands.append(shlex.split(line.split(">")[0])[1:])
    assert {c[1] for c in commands} == {"compile", "submit"}
    for argv in commands:
        build_parser().parse_args(argv)
