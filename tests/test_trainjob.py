"""trainjob: how a training stage runs beyond one process (argv, TrainJob body, wait/fail semantics).

The TrainJob lifecycle runs against an in-memory stand-in for ``CustomObjectsApi`` (no cluster here).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from srcal.kubeflow import trainjob
from srcal.cli import build_parser


class ApiError(Exception):
    def __init__(self, status):
        super().__init__(f"HTTP {status}")
        self.status = status


class FakeTrainJobs:
    def __init__(self, final="Complete", after=2):
        self.final, self.after, self.polls, self.calls, self.objects = final, after, 0, [], {}

    def create_namespaced_custom_object(self, group, version, ns, plural, body):
        assert (group, version, plural) == ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
        self.calls.append("create")
        self.objects[body["metadata"]["name"]] = body

    def get_namespaced_custom_object(self, group, version, ns, plural, name):
        self.polls += 1
        conds = [{"type": "Created", "status": "True"}]
        if self.polls > self.after:
            conds.append({"type": self.final, "status": "True", "message": "exit code 1" if self.final == "Failed" else ""})
        return {**self.objects[name], "status": {"conditions": conds}}

    def delete_namespaced_custom_object(self, group, version, ns, plural, name):
        self.calls.append("delete")
        self.objects.pop(name)


@pytest.fixture(autouse=True)
def fast_poll(monkeypatch):
    monkeypatch.setattr(trainjob.time, "sleep", lambda s: None)


def test_stage_argv_is_what_the_cli_parses():
    argv = trainjob.stage_argv("align", "llava-1.5-7b", ["align.beta=0.2"], {"pairs": "s3://b/p", "policy": "s3://b/q"},
                               "s3://b/out-trainjob", {"round": "round2"})
    args = build_parser().parse_args(argv)
    assert (args.command, args.name, args.recipe, args.set) == ("stage", "align", "llava-1.5-7b", ["align.beta=0.2"])
    assert args.input == ["pairs=s3://b/p", "policy=s3://b/q"] and args.output == "s3://b/out-trainjob"
    assert args.option == ["round=round2"]


def test_trainjob_manifest_runs_the_same_stage_command_under_torchrun():
    m = trainjob.trainjob_manifest("srcal-align-1", image="ghcr.io/srcal/srcal-train:abc", argv=["stage", "align"],
                                   num_nodes=2, gpus_per_node=8, secret_env="srcal-s3")
    t = m["spec"]["trainer"]
    assert m["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                                       "name": "torch-distributed"}
    assert t["command"] == ["torchrun", "-m", "srcal.cli", "stage", "align"]
    assert t["numNodes"] == 2 and t["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": "8"}
    secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in t["env"]}
    assert secret_env["AWS_ACCESS_KEY_ID"] == {"name": "srcal-s3", "key": "AWS_ACCESS_KEY_ID"}
    with pytest.raises(trainjob.TrainJobError, match="2 or more nodes"):
        trainjob.trainjob_manifest("x", image="i", argv=[], num_nodes=1, gpus_per_node=1)


def _manifest():
    return trainjob.trainjob_manifest("srcal-rft-1", image="i", argv=["stage", "rft"], num_nodes=2, gpus_per_node=1)


def test_submit_and_wait_returns_when_complete():
    api = FakeTrainJobs("Complete", after=2)
    obj = trainjob.submit_and_wait(_manifest(), "team", api=api)
    assert trainjob.job_state(obj) == "Complete" and api.calls == ["create"] and api.polls == 3


def test_a_failed_job_is_deleted_and_reported():
    api = FakeTrainJobs("Failed", after=1)
    with pytest.raises(trainjob.TrainJobError, match="failed.*exit code 1"):
        trainjob.submit_and_wait(_manifest(), "team", api=api)
    assert api.calls == ["create", "delete"]


def test_a_job_past_its_timeout_is_deleted():
    api = FakeTrainJobs("Complete", after=10**9)
    with pytest.raises(trainjob.TrainJobError, match="did not complete in 0s"):
        trainjob.submit_and_wait(_manifest(), "team", api=api, timeout_s=0)
    assert api.calls == ["create", "delete"]


def test_multi_node_needs_s3_artifacts(tmp_path):
    art = SimpleNamespace(path=str(tmp_path / "a"), uri=str(tmp_path / "a"))
    with pytest.raises(trainjob.TrainJobError, match="s3:// pipeline_root"):
        trainjob.run_training_stage("rft", "tiny", "[]", {"base": art, "data": art}, art, num_nodes=2)


def test_only_training_stages(tmp_path):
    art = SimpleNamespace(path=str(tmp_path), uri=str(tmp_path))
    with pytest.raises(trainjob.TrainJobError, match="not a training stage"):
        trainjob.run_training_stage("search", "tiny", "[]", {}, art)


def test_one_process_path_calls_the_stage_runner(monkeypatch, tmp_path):
    from srcal.kubeflow import steps

    seen = {}
    monkeypatch.setattr(steps, "run_stage", lambda *a, **kw: seen.update(args=a, kw=kw))
    art = lambda n: SimpleNamespace(path=str(tmp_path / n), uri=f"s3://b/{n}")
    trainjob.run_training_stage("align", "tiny", '["align.beta=0.3"]', {"pairs": art("p")}, art("o"), gpus=0,
                                options={"round": "round1"})
    assert seen["args"] == ("align", "tiny", '["align.beta=0.3"]', {"pairs": str(tmp_path / "p")}, str(tmp_path / "o"))
    assert seen["kw"]["options"] == {"round": "round1"}


def test_multi_node_submits_one_rank_per_process(monkeypatch, tmp_path):
    """The TrainJob runs the same stage command with world_size=1 (torchrun already made each process a
    rank), reads S3 inputs, and the component imports the job's published output."""
    from srcal.kubeflow import steps

    api = FakeTrainJobs("Complete", after=0)
    imported = {}
    monkeypatch.setenv("SRCAL_IMAGE", "ghcr.io/srcal/srcal-train:abc")
    monkeypatch.setattr(steps, "import_artifact", lambda uri, dest: imported.update(uri=uri, dest=dest))
    art = lambda n: SimpleNamespace(path=str(tmp_path / n), uri=f"s3://b/run/{n}")
    trainjob.run_training_stage("rft", "tiny", '["rft.world_size=4"]', {"base": art("base"), "data": art("data")},
                                art("rft"), num_nodes=2, gpus=4, s3_secret="srcal-s3", api=api)
    (job,) = api.objects.values()
    cmd = job["spec"]["trainer"]["command"]
    assert cmd[:3] == ["torchrun", "-m", "srcal.cli"]
    args = build_parser().parse_args(cmd[3:])
    assert args.set == ["rft.world_size=4", "rft.world_size=1"]  # the last override wins
    assert args.input == ["base=s3://b/run/base", "data=s3://b/run/data"] and args.output == "s3://b/run/rft-trainjob"
    assert job["spec"]["trainer"]["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": "4"}
    assert imported == {"uri": "s3://b/run/rft-trainjob", "dest": str(tmp_path / "rft")}


def test_only_global_rank_0_publishes(tmp_path, monkeypatch):
    """In a multi-node TrainJob every torchrun process runs the stage; the stage runner publishes only
    from RANK 0 (rank 3 returns its summary and leaves the output untouched)."""
    from srcal import stages
    from srcal.run import store
    from srcal.config import load_recipe

    small = ["data.rft_size=8", "data.calib_size=4", "data.eval_size=4", "data.base_train_size=0"]
    monkeypatch.setenv("RANK", "3")
    summary = stages.execute("data", load_recipe("tiny", small), {}, str(tmp_path / "data"))
    assert summary["stage"] == "data" and not store.is_complete(str(tmp_path / "data"))
    monkeypatch.setenv("RANK", "0")
    stages.execute("data", load_recipe("tiny", small), {}, str(tmp_path / "data"))
    assert store.is_complete(str(tmp_path / "data"))
