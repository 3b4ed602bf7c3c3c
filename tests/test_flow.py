"""flow: the plan's layout and wiring, and a real Prefect run over recording stand-in stages
(resume skips finished steps, a failed step leaves earlier ones reusable, transient errors are retried,
configuration errors are not, and an s3:// run directory works)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from srcal import stages
from srcal.run import flow
from srcal.config import load_recipe

CALLS: Counter = Counter()
FAIL: dict[str, str] = {}  # step key (local runs) -> "transient" (fails once) | "config" (always)


def recording_stage(recipe, inputs, out, **options):
    """Stand-in for every stage but report: records the call, writes what the report reads."""
    parts = Path(str(out).removesuffix(".partial")).parts
    key = "/".join(parts[-2:]) if parts[-2] in ("round1", "round2", "eval", "rscorer") else parts[-1]
    CALLS[key] += 1
    kind = FAIL.get(key)
    if kind == "transient":
        FAIL.pop(key)
        raise RuntimeError("transient: connection reset")
    if kind == "config":
        raise stages.StageError("too few pairs; relax curate.min_margin")
    out.mkdir(parents=True, exist_ok=True)
    (out / "inputs.json").write_text(json.dumps({k: str(v) for k, v in inputs.items()}))
    if "round" in options and "model" in inputs:  # an eval step
        preds = [{"id": f"e{i}", "correct": i % 2 == 0, "factuality": 0.5, "consistent": True, "rap_format": True}
                 for i in range(4)]
        (out / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
        entry = {"name": options["round"], "n": 4, "accuracy": 0.5, "rationale_factuality": 0.5,
                 "consistency": 1.0, "rap_format": 1.0}
        (out / "metrics.json").write_text(json.dumps({"recipe": recipe.name, "rounds": [entry]}))
    if "rscorer_data" in inputs:  # the judge
        (out / "heldout_metrics.json").write_text(json.dumps({"heldout_agreement": 0.8, "heldout_pairs": 10}))
    return {"counts": {"out": 1}}


@pytest.fixture
def fake_stages(monkeypatch, tmp_path_factory):
    target = f"{__name__}:recording_stage"
    table = {name: (target, ("seed",)) for name in ("data", "base", "eval", "rft", "rscorer-data",
                                                    "rscorer-train", "search", "search-merge", "score",
                                                    "curate", "align")}
    table["report"] = ("srcal.report:run_report", ("name",))
    monkeypatch.setattr(stages, "STAGES", table)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect")))
    CALLS.clear()
    FAIL.clear()
    yield


def test_plan_layout_and_wiring():
    recipe = load_recipe("tiny")  # rounds: 3
    steps = flow.plan_run(recipe, "/r")
    keys = [s.key for s in steps]
    assert keys[:8] == ["data", "base", "eval/base", "rft", "eval/rft", "rscorer/search", "rscorer/data",
                        "rscorer/judge"]
    for k in (1, 2, 3):
        assert [f"round{k}/search", f"round{k}/score", f"round{k}/curate", f"round{k}/align", f"eval/round{k}"] == \
            keys[keys.index(f"round{k}/search"):keys.index(f"round{k}/search") + 5]
    assert keys[-1] == "report" and len(keys) == len(set(keys))
    by = {s.key: s for s in steps}
    # round k searches with, and is aligned on top of, round k−1's policy (round 1: RFT)
    assert by["round1/search"].inputs["policy"] == "/r/rft"
    assert by["round1/search"].options == {"split": "calib", "round": "round1", "shard": "0/1"}
    assert by["round2/search"].inputs["policy"] == "/r/round1/align"
    assert by["round3/align"].inputs["policy"] == "/r/round2/align"
    assert by["round2/align"].options == {"round": "round2"}
    assert by["eval/round3"].inputs["model"] == "/r/round3/align" and by["eval/round3"].options == {"round": "round3"}
    assert by["round1/curate"].inputs == {"judgments": "/r/round1/score", "candidates": "/r/round1/search",
                                          "data": "/r/data"}
    assert {"eval_base", "eval_rft", "eval_round3", "judge", "round2_curate", "rscorer_search"} <= set(by["report"].inputs)
    # every input is produced by an earlier step (a topological order)
    produced = set()
    for s in steps:
        assert set(s.inputs.values()) <= produced, s.key
        produced.add(s.output)


@pytest.mark.parametrize("world", ["shapes", "real"])
def test_plan_trains_the_judge_on_the_rft_policy_candidates_of_the_rft_split(world):
    """Both worlds: rscorer-data reads rscorer/search — the RFT policy on the rft split, at most
    rscorer.policy_samples samples — never round 1's calibration search (bug 1: disjoint splits gave 0 rows)."""
    recipe = load_recipe("tiny", ["rounds=1"])
    recipe.data.world = world  # plan only; the tiny model cannot run on real data
    by = {s.key: s for s in flow.plan_run(recipe, "/r")}
    assert by["rscorer/data"].inputs["candidates"] == "/r/rscorer/search"
    assert by["rscorer/search"].inputs["policy"] == "/r/rft"
    assert by["rscorer/search"].options == {"split": "rft", "shard": "0/1",
                                            "limit": str(recipe.rscorer.policy_samples)}


def test_plan_shards_search_and_merges():
    steps = flow.plan_run(load_recipe("tiny", ["rounds=1", "search.shards=2"]), "s3://b/run")
    by = {s.key: s for s in steps}
    assert by["round1/search-shards/1"].options["shard"] == "1/2"
    assert by["round1/search"].stage == "search-merge"
    assert by["round1/search"].inputs == {"shard0": "s3://b/run/round1/search-shards/0",
                                          "shard1": "s3://b/run/round1/search-shards/1"}


def _status(result):
    return {r["step"]: r["status"] for r in result["steps"]}


def test_flow_runs_resumes_after_a_failure_and_retries(fake_stages, tmp_path):
    recipe = load_recipe("tiny", ["rounds=2"])
    out = tmp_path / "run"
    # 1) a configuration error in round 2's curate stops the run, and is not retried
    FAIL["round2/curate"] = "config"
    with pytest.raises(stages.StageError, match="curate.min_margin"):
        flow.run_flow(recipe, str(out), retries=2)
    assert CALLS["round2/curate"] == 1
    assert (out / "round1" / "align" / "_SRCAL_COMPLETE.json").exists()
    assert not (out / "round2" / "curate" / "_SRCAL_COMPLETE.json").exists()
    first_calls = CALLS.copy()

    # 2) re-run: every finished step is skipped; a transient error in round 2's align is retried once
    FAIL.clear()
    FAIL["round2/align"] = "transient"
    result = flow.run_flow(recipe, str(out), retries=1)
    st = _status(result)
    assert all(st[k] == "skipped" for k in ("data", "base", "rft", "round1/align", "eval/round1", "round2/score"))
    assert all(st[k] == "ran" for k in ("round2/curate", "round2/align", "eval/round2", "report"))
    assert CALLS["round1/align"] == first_calls["round1/align"] == 1
    assert CALLS["round2/align"] == 2  # failed once, retried once
    m = json.loads((out / "metrics.json").read_text())
    assert [r["name"] for r in m["rounds"]] == ["base", "rft", "round1", "round2"]
    assert m["run"]["steps"][0]["status"] == "skipped"
    assert (out / "report.html").read_text().count("data:image/png;base64,") >= 1
    assert "](report/plots/" in (out / "report.md").read_text()

    # 3) a third run does nothing but skip; changing a recipe value recomputes what depends on it
    again = flow.run_flow(recipe, str(out))
    assert set(_status(again).values()) == {"skipped"}


def test_flow_to_s3(fake_stages, s3_bucket, request):
    from srcal.run import store

    out = f"{s3_bucket}/{request.node.name}"
    result = flow.run_flow(load_recipe("tiny", ["rounds=1"]), out)
    assert result["out"] == out
    assert store.is_complete(f"{out}/round1/align")
    m = json.loads(store.read_text(out, "metrics.json"))
    assert m["recipe"] == "tiny" and m["rscorer"]["heldout_agreement"] == 0.8
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def test_seed_from_copies_only_complete_artifacts(tmp_path):
    """--from copies finished artifacts (marker present) and leaves half-written ones behind."""
    from srcal.run import store

    recipe = load_recipe("tiny", ["rounds=1"])
    src = tmp_path / "main"
    done = src / "data"
    done.mkdir(parents=True)
    (done / "x.txt").write_text("1")
    store.publish(done, str(src / "base"), marker={"resume_key": "k", "stage": "base"})
    (src / "rft.partial").mkdir()  # a killed stage's scratch: never copied
    out = tmp_path / "ablation"
    copied = flow.seed_from(flow.plan_run(recipe, str(out)), str(src), str(out))
    assert copied == ["base"]
    assert store.is_complete(str(out / "base")) and (out / "base" / "x.txt").read_text() == "1"
    assert not (out / "rft").exists() and not (out / "rft.partial").exists()
    assert flow.seed_from(flow.plan_run(recipe, str(out)), str(src), str(out)) == []  # idempotent


def test_report_shows_the_search_time_of_a_sharded_search(tmp_path):
    """Bug 5: with search.shards > 1 the report's round<k>_search was the merge's own ~0.0 s. The merge now
    carries its shards' timings (3.0 s + 5.0 s, from their summary.json): the report shows 8.0 s plus the
    merge's own time, and the summary keeps the ParallelFor's wall time (max = 5.0 s) too."""
    from srcal import report
    from srcal.run import store

    recipe = load_recipe("tiny", ["rounds=1", "search.shards=2"])
    steps = {s.key: s for s in flow.plan_run(recipe, str(tmp_path / "run"))}
    for i, seconds in enumerate((3.0, 5.0)):
        shard = steps[f"round1/search-shards/{i}"]
        d = tmp_path / f"s{i}"
        d.mkdir()
        cand = {"sample_id": f"x{i}", "text": "It is red.\nAnswer: red", "answer": "red", "n_tokens": 5,
                "sentences": ["It is red."]}
        (d / "candidates.jsonl").write_text(json.dumps(cand) + "\n")
        (d / "summary.json").write_text(json.dumps({"stage": "search", "timings_s": {"total": seconds}}))
        store.publish(d, shard.output, marker={"stage": "search", "resume_key": str(i)})
    merge = steps["round1/search"]
    summary = stages.execute(merge.stage, recipe, merge.inputs, merge.output, **merge.options)
    assert summary["timings_s"]["shards_sum"] == 8.0 and summary["timings_s"]["shards_max"] == 5.0
    own = summary["timings_s"]["total"]
    shown = report.collect(recipe, {"round1_search": Path(merge.output)})["timings"]["round1_search"]
    assert shown == round(8.0 + own, 1) and shown >= 8.0


def test_search_keys_depend_on_rounds_only_for_a_fresh_round_slice():
    """A 1-round ablation ``--from`` a 3-round run reuses the judge's search (RFT split, no round option);
    round 1's search is redone, because with ``search.fresh_per_round`` its slice is every 3rd vs every row."""
    from srcal.stages import resume_key

    three, one = load_recipe("tiny"), load_recipe("tiny", ["rounds=1"])
    judge_opts = {"split": "rft", "shard": "0/1", "limit": "150"}
    assert resume_key("search", three, {}, judge_opts) == resume_key("search", one, {}, judge_opts)
    round1 = {"split": "calib", "round": "round1"}
    assert resume_key("search", three, {}, round1) != resume_key("search", one, {}, round1)
    stale = ["search.fresh_per_round=false"]
    assert (resume_key("search", load_recipe("tiny", stale), {}, round1)
            == resume_key("search", load_recipe("tiny", [*stale, "rounds=1"]), {}, round1))


def test_data_and_recipe_errors_are_not_retried_transient_ones_are():
    from srcal.config import RecipeError
    from srcal.data.schema import DataError

    assert flow._not_retryable(DataError("12 of 40 rows rejected (30%) > data.max_rejected_share"))
    assert flow._not_retryable(RecipeError("unknown key")) and flow._not_retryable(stages.StageError("0 pairs"))
    assert not flow._not_retryable(RuntimeError("connection reset")) and not flow._not_retryable(OSError(104, "x"))
