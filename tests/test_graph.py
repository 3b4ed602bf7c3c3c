"""srcal.graph: one plan of the method, and the KFP pipeline built from it for every shipped recipe.

The DAG check reads the compiled pipeline spec the way the KFP backend does (tasks per DAG, artifact
inputs by producer task and output key, loop DAGs fed through the loop task's inputs) and compares every
task and every edge with :func:`srcal.graph.build_plan` — the test the stage graph lacked while it was
written twice (issue 12, bug 1: the pipeline never gave rscorer-data its candidates).
"""

from __future__ import annotations

import pytest

from srcal import graph
from srcal.config import available_recipes, load_recipe

RECIPES = ["template", "tiny", "llava-1.5-7b", "llava-next-8b", "qwen2.5-vl-7b"]  # template: docs/new-base-model.md


def test_every_shipped_recipe_is_checked():
    assert sorted(RECIPES) == available_recipes()


@pytest.mark.parametrize("world", ["shapes", "real"])
def test_the_judge_learns_from_the_rft_policy_on_the_rft_split_in_both_worlds(world):
    recipe = load_recipe("tiny", ["rscorer.policy_samples=37"])
    recipe.data.world = world  # the plan is the same in both worlds
    plan = graph.build_plan(recipe)
    by = {s.key: s for s in plan}
    keys = [s.key for s in plan]
    assert keys[:8] == ["data", "base", "eval/base", "rft", "eval/rft", "rscorer/search", "rscorer/data",
                        "rscorer/judge"]
    rs = by["rscorer/search"]
    assert rs.stage == "search" and rs.inputs["policy"] == "rft" and not rs.fan_out
    assert rs.options == {"split": "rft", "limit": "37", "shard": "0/1"}  # never calib or eval
    assert by["rscorer/data"].inputs["candidates"] == "rscorer/search"
    assert by["round1/score"].inputs["judge"] == "rscorer/judge"
    # a topological order: every input is produced by an earlier step
    seen: set[str] = set()
    for s in plan:
        assert set(s.inputs.values()) <= seen, s.key
        seen.add(s.key)


def test_rounds_chain_and_only_the_round_searches_fan_out():
    plan = graph.build_plan(load_recipe("tiny"))  # rounds: 3
    by = {s.key: s for s in plan}
    assert [s.key for s in plan if s.fan_out] == ["round1/search", "round2/search", "round3/search"]
    for k, policy in ((1, "rft"), (2, "round1/align"), (3, "round2/align")):
        assert by[f"round{k}/search"].inputs["policy"] == policy
        assert by[f"round{k}/search"].options == {"split": "calib", "round": f"round{k}"}
        assert by[f"round{k}/align"].inputs["policy"] == policy
        assert by[f"eval/round{k}"].inputs["model"] == f"round{k}/align"
    assert {s.key for s in plan if s.gpu} == {"base", "rft", "rscorer/search", "rscorer/judge", "eval/base",
                                              "eval/rft"} | {f"{p}round{k}{q}" for k in (1, 2, 3)
                                                             for p, q in (("", "/search"), ("", "/align"),
                                                                          ("eval/", ""))}
    assert by["round1/score"].placement == "judge"
    assert set(graph.TIMING_ONLY) <= set(by["report"].inputs)


def test_expand_shards_and_step_options():
    recipe = load_recipe("tiny", ["rounds=1", "search.shards=2"])
    steps = graph.expand(graph.build_plan(recipe), 2, lambda rel: f"s3://b/run/{rel}")
    by = {s.key: s for s in steps}
    assert by["round1/search-shards/1"].options == {"split": "calib", "round": "round1", "shard": "1/2"}
    assert by["round1/search"].stage == "search-merge" and by["round1/search"].options == {}
    assert by["round1/search"].inputs == {"shard0": "s3://b/run/round1/search-shards/0",
                                          "shard1": "s3://b/run/round1/search-shards/1"}
    assert by["round1/score"].inputs["candidates"] == "s3://b/run/round1/search"
    assert "rscorer/search-shards/0" not in by and by["rscorer/search"].options["shard"] == "0/1"
    # a component resolves exactly these from its step key
    assert graph.step_options(recipe, "round1/search", "1/2") == ("search", by["round1/search-shards/1"].options)
    assert graph.step_options(recipe, "round1/search") == ("search-merge", {})
    assert graph.step_options(recipe, "rscorer/search", "0/1") == ("search", by["rscorer/search"].options)
    with pytest.raises(ValueError, match="does not fan out"):
        graph.step_options(recipe, "rscorer/search", "1/2")
    with pytest.raises(KeyError, match="round2/align"):
        graph.step_options(recipe, "round2/align")


def test_a_component_resolves_its_options_from_the_run_recipe():
    """Options are read at run time: a submit-time --set reaches a step compiled earlier."""
    from srcal.kubeflow import steps as kp

    stage, options = kp.step_options("rscorer/search", "llava-1.5-7b", '["rscorer.policy_samples=12"]', "0/1")
    assert stage == "search" and options["limit"] == "12" and options["split"] == "rft"
    with pytest.raises(kp.PipelineError, match="recompile"):
        kp.step_options("round3/align", "tiny", '["rounds=2"]')


# ------------------------------------------------------------------------------- the compiled DAG


def _spec(recipe: str) -> dict:
    from google.protobuf import json_format


    from srcal.kubeflow import client as kpc

    return json_format.MessageToDict(kpc.build_pipeline(recipe).pipeline_spec)


class Dag:
    """Tasks of a compiled pipeline by display name, with artifact inputs resolved to their producers."""

    def __init__(self, spec: dict):
        from srcal.kubeflow import client as kpc

        self.spec = spec
        self.by_display: dict[str, dict] = {}
        self.where: dict[str, str] = {}  # display -> DAG component it sits in
        self.display: dict[tuple[str, str], str] = {}  # (DAG, task name) -> display
        self.parent: dict[str, tuple[str, dict]] = {}  # DAG component -> (its DAG, the task running it)
        for dag, name, task in kpc.iter_tasks(spec):
            shown = task["taskInfo"]["name"]
            assert shown not in self.by_display, f"two tasks named {shown}"
            self.by_display[shown] = task
            self.where[shown] = dag
            self.display[(dag, name)] = shown
            self.parent[task["componentRef"]["name"]] = (dag, task)

    def producer(self, shown: str, input_name: str) -> tuple[str, str]:
        """(producer display name, output key) of an artifact input, through loop DAG boundaries."""
        dag, src = self.where[shown], self.by_display[shown]["inputs"]["artifacts"][input_name]
        while "componentInputArtifact" in src:
            dag, outer = self.parent[dag]
            src = outer["inputs"]["artifacts"][src["componentInputArtifact"]]
        out = src["taskOutputArtifact"]
        return self.display[(dag, out["producerTask"])], out["outputArtifactKey"]

    def step_param(self, shown: str):
        value = self.by_display[shown]["inputs"].get("parameters", {}).get("step")
        return value and value["runtimeValue"]["constant"]


PIPELINE_ONLY = {"rscorer-serve", "export", "rscorer-teardown", "src"}  # src: the exit handler's DAG


@pytest.mark.parametrize("recipe", RECIPES)
def test_pipeline_dag_is_the_plan(recipe):
    plan = graph.build_plan(load_recipe(recipe))
    dag = Dag(_spec(recipe))
    from pipelines.srcal_pipeline import STAGE_OPS
    expected: set[str] = set(PIPELINE_ONLY)
    for step in plan:
        name = graph.task_name(step.key)
        task_of = name
        if step.fan_out:  # indexes → ParallelFor of the stage → merge (named as the step: what consumers read)
            loop, inner, idx = f"{name}-shards", f"{name}-shard", f"{name}-shard-indexes"
            expected |= {loop, inner, idx}
            assert dag.producer(name, "shards")[0] == loop  # dsl.Collected over the loop's outputs
            assert dag.step_param(name) == step.key and dag.step_param(inner) == step.key
            assert dag.by_display[inner]["componentRef"]["name"].startswith("comp-search-op")
            task_of = inner
        expected.add(name)
        comp = dag.by_display[task_of]["componentRef"]["name"]
        assert comp.removeprefix("comp-").rsplit("-op", 1)[0] == step.stage, (name, comp)
        # every input comes from the producer the plan names, through the output the table names
        arts = dag.by_display[task_of]["inputs"].get("artifacts", {})
        assert set(arts) == set(step.inputs), (name, sorted(arts), sorted(step.inputs))
        for input_name, src_key in step.inputs.items():
            src = next(s for s in plan if s.key == src_key)
            _, main, extract, _ = STAGE_OPS[src.stage]
            want_out = (extract or main) if step.stage == "report" and not src.fan_out else main
            if src.fan_out:
                want_out = "candidates"
            assert dag.producer(task_of, input_name) == (graph.task_name(src_key), want_out), (name, input_name)
        # options travel as the step key and are resolved at run time from the same plan
        assert dag.step_param(task_of) == (step.key if step.options or step.fan_out else None), name
    assert set(dag.by_display) == expected


@pytest.mark.parametrize("recipe", ["tiny", "qwen2.5-vl-7b"])
def test_pipeline_round_inputs(recipe):
    """Round k's search (inside its ParallelFor) and align use round k−1's aligned policy; round 1 the RFT
    model; rscorer-data gets the rscorer search's candidates (the input the pipeline used to lack)."""
    dag = Dag(_spec(recipe))
    rounds = load_recipe(recipe).rounds
    for k in range(1, rounds + 1):
        want = ("rft", "rft") if k == 1 else (f"round{k - 1}-align", "aligned")
        assert dag.producer(f"round{k}-search-shard", "policy") == want
        assert dag.producer(f"round{k}-align", "policy") == want
        assert dag.producer(f"round{k}-score", "candidates") == (f"round{k}-search", "candidates")
    assert dag.producer("rscorer-data", "candidates") == ("rscorer-search", "candidates")
    assert dag.producer("rscorer-search", "policy") == ("rft", "rft")
    assert dag.producer("export", "policy") == (f"round{rounds}-align", "aligned")
