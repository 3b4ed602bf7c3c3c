"""Stage rscorer-data: labelled pairs in both orders, ties kept, held-out scenes disjoint."""

from __future__ import annotations

import json
import math
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from http_utils import send_json
from scorer_helpers import write_jsonl

from srcal.config import load_recipe
from srcal.scorer.data import pair_rows, run_rscorer_data, swap_label


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    recipe = load_recipe("tiny", ["rscorer.n_train_pairs=120", "rscorer.n_heldout_pairs=40"])
    out = tmp_path_factory.mktemp("rdata")
    summary = run_rscorer_data(recipe, {}, out)
    read = lambda n: [json.loads(x) for x in (out / n).read_text().splitlines()]
    return recipe, summary, read("train.jsonl"), read("heldout.jsonl"), read("samples.jsonl")


def test_counts_and_both_orders(built):
    _, summary, train, held, _ = built
    assert summary["counts"]["train_pairs"] == 120 and len(train) == 240
    assert summary["counts"]["heldout_pairs"] == 40 and len(held) == 80
    by = {}
    for r in train:
        by.setdefault(r["pair_id"], {})[r["order"]] = r
    assert all(set(v) == {"ab", "ba"} for v in by.values())
    for v in by.values():
        ab, ba = v["ab"], v["ba"]
        assert (ab["response_a"], ab["response_b"]) == (ba["response_b"], ba["response_a"])
        assert ba["label"] == swap_label(ab["label"])
        assert (ab["errors_a"], ab["aux_a"]) == (ba["errors_b"], ba["aux_b"])


def test_labels_follow_the_oracle_and_ties_are_c(built):
    _, _, train, _, _ = built
    labels = Counter(r["label"] for r in train)
    assert labels["A"] > 0 and labels["B"] > 0 and labels["C"] > 0
    # the noise-free label is the quality order: fewer errors never loses
    for r in train:
        if r["clean_label"] == "A":
            assert r["quality_a"] > r["quality_b"]
        elif r["clean_label"] == "C":
            assert r["quality_a"] == pytest.approx(r["quality_b"])
    # noise 5% + position bias 5%: most labels equal the clean ones
    agree = sum(r["label"] == r["clean_label"] for r in train) / len(train)
    assert 0.8 < agree < 1.0


def test_heldout_scenes_are_disjoint_and_samples_are_kept(built):
    _, _, train, held, samples = built
    ids_t = {r["sample_id"] for r in train}
    ids_h = {r["sample_id"] for r in held}
    assert not ids_t & ids_h
    scenes = {json.dumps(s["scene"], sort_keys=True) for s in samples if s["id"] in ids_t}
    assert sum(json.dumps(s["scene"], sort_keys=True) in scenes for s in samples if s["id"] in ids_h) <= 2
    assert ids_t | ids_h <= {s["id"] for s in samples}


def test_aux_targets_match_the_labeller(built):
    _, _, train, _, _ = built
    for r in train[:60]:
        assert r["aux_a"]["errors"] == r["errors_a"]
        assert r["aux_a"]["n_true"] == sum(r["aux_a"]["claims_true"])


def test_pair_rows_swap_everything():
    rows = pair_rows("p1", {"id": "s"}, ("x", "y"), "ta", "tb",
                     {"label": "A", "clean_label": "C", "errors_a": 0, "errors_b": 2, "quality_a": 1.0,
                      "quality_b": -2.0}, {"k": 1}, {"k": 2})
    assert [r["order"] for r in rows] == ["ab", "ba"]
    assert rows[1]["label"] == "B" and rows[1]["clean_label"] == "C"
    assert rows[1]["source"] == "y|x" and rows[1]["aux_a"] == {"k": 2}


def test_oracle_labeller_refuses_real_data(tmp_path):
    recipe = load_recipe("tiny")
    recipe.data.world = "real"
    with pytest.raises(ValueError, match="labeller.kind"):
        run_rscorer_data(recipe, {}, tmp_path)


# --------------------------------------------------------------------------- the policy's own candidates


def fake_search(recipe, inputs, out, split="calib", limit=None, shard="0/1", **_):
    """Stand-in ``search``: three candidates (the right answer, two wrong ones) for the first ``limit``
    samples of ``data/<split>.jsonl`` — whatever split the plan asks for."""
    rows = [json.loads(x) for x in (Path(inputs["data"]) / f"{split}.jsonl").read_text().splitlines()]
    rows = rows[: int(limit)] if limit else rows
    texts = ["It shows {a}.\nAnswer: {a}", "It shows a cat.\nAnswer: a cat", "Nothing is clear.\nAnswer: nothing"]
    cands = [{"id": f"{r['id']}#c{k}", "sample_id": r["id"], "index": k, "text": t.format(a=r["answer"])}
             for r in rows for k, t in enumerate(texts)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "candidates.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cands))
    return {"counts": {"candidates": len(cands)}}


def empty_stage(recipe, inputs, out, **_):
    out.mkdir(parents=True, exist_ok=True)
    return {}


class LabellerServer:
    """An OpenAI-compatible labeller on loopback: the response whose ``Answer:`` line is right wins (C when
    both or neither are); the verdict comes back as one token's log-probs (0.8 / 0.1 / 0.1)."""

    PAIR = re.compile(r"Question: (?P<q>.*?)\n.*Response A:\n(?P<a>.*?)\n\nResponse B:\n(?P<b>.*?)\n\n", re.S)

    def __init__(self, answers: dict[str, str]):
        server = self
        self.answers, self.calls = answers, 0

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                m = server.PAIR.search(body["messages"][-1]["content"])
                truth = server.answers[m["q"]]
                ok = [text.rsplit("Answer: ", 1)[-1] == truth for text in (m["a"], m["b"])]
                verdict = "A" if ok == [True, False] else "B" if ok == [False, True] else "C"
                server.calls += 1
                top = [{"token": x, "logprob": math.log(0.8 if x == verdict else 0.1)} for x in "ABC"]
                send_json(self, {"choices": [{"index": 0, "message": {"role": "assistant", "content": verdict},
                                              "logprobs": {"content": [{"token": verdict, "logprob": math.log(0.8),
                                                                        "top_logprobs": top}]}}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """data → (stand-in base, rft, search) → the real rscorer-data, wired by the plan of the llava-1.5-7b
    recipe (real-shaped parquet releases, an OpenAI-compatible labeller on loopback)."""
    import real_data

    from srcal import stages
    from srcal.run import flow

    root = tmp_path_factory.mktemp("real")
    dirs = real_data.write_recipe_sources(root / "releases", 8, scale=0.25)
    overrides = [*(f"data.sources.{i}.path={p}" for i, p in enumerate(dirs)), "data.rft_size=8",
                 "data.calib_size=4", "data.eval_size=4", "rscorer.policy_samples=6", "rscorer.n_train_pairs=40",
                 "rscorer.n_heldout_pairs=4", "rscorer.pairs_per_sample=2"]
    table = dict(stages.STAGES)
    stages.STAGES.update({"base": (f"{__name__}:empty_stage", ()), "rft": (f"{__name__}:empty_stage", ()),
                          "search": (f"{__name__}:fake_search", ("seed",))})
    server = None
    try:
        recipe = load_recipe("llava-1.5-7b", [*overrides, "labeller.url=http://127.0.0.1:9/v1"])
        steps = flow.plan_run(recipe, str(root / "run"))
        stages.execute("data", recipe, {}, steps[0].output)
        split_rows = {s: [json.loads(x) for x in (root / "run" / "data" / f"{s}.jsonl").read_text().splitlines()]
                      for s in ("rft", "calib")}
        server = LabellerServer({r["question"]: r["answer"] for r in split_rows["rft"]})
        recipe = load_recipe("llava-1.5-7b", [*overrides, f"labeller.url={server.url}"])
        steps = flow.plan_run(recipe, str(root / "run"))
        for step in steps[:steps.index(next(s for s in steps if s.key == "rscorer/data")) + 1]:
            if step.stage != "eval":
                summary = stages.execute(step.stage, recipe, step.inputs, step.output, **step.options)
        read = lambda n: [json.loads(x) for x in (root / "run" / "rscorer" / "data" / n).read_text().splitlines()]
        yield {"summary": summary, "train": read("train.jsonl"), "held": read("heldout.jsonl"),
               "splits": split_rows, "labeller_calls": server.calls}
    finally:
        stages.STAGES.clear()
        stages.STAGES.update(table)
        if server:
            server.close()


def test_real_recipe_judge_pairs_are_the_rft_policy_candidates_on_rft_samples(real_run):
    """Bug 1: the plan fed rscorer-data the calibration search, whose samples are not in rft.jsonl, so a real
    recipe stopped with 0 rows. Now the plan's rscorer/search (split=rft, 6 samples) feeds it: rows appear,
    every pair is two of the policy's candidates of an RFT-split sample, labelled by the endpoint.

    Hand count: 6 policy samples, held-out gets ceil(1.0 × 4 / 2) = 2 of them (≤ 6 // 2), training 4; each
    sample has 3 distinct candidates → 3 possible pairs, 2 drawn (pairs_per_sample) → 8 train, 4 held-out."""
    s, train, held = real_run["summary"], real_run["train"], real_run["held"]
    rft_ids = {r["id"] for r in real_run["splits"]["rft"]}
    assert s["counts"]["policy_samples_train"] == 4 and s["counts"]["policy_samples_heldout"] == 2
    assert s["counts"]["train_pairs"] == 8 and s["counts"]["heldout_pairs"] == 4
    assert len(train) == 16 and len(held) == 8 and real_run["labeller_calls"] == 12
    ids_t, ids_h = {r["sample_id"] for r in train}, {r["sample_id"] for r in held}
    assert ids_t | ids_h <= rft_ids and not ids_t & ids_h  # RFT split only; held-out samples unused in training
    assert not (ids_t | ids_h) & {r["id"] for r in real_run["splits"]["calib"]}
    for r in train + held:  # model vs model, candidate ids kept (rscorer-train's policy_agreement reads these)
        assert r["source_a"] == r["source_b"] == "model" and r["source"] == "model|model"
        assert r["cand_a"].startswith(r["sample_id"] + "#c") and r["cand_b"].startswith(r["sample_id"] + "#c")
        right = [x.endswith("Answer: " + next(q["answer"] for q in real_run["splits"]["rft"]
                                                if q["id"] == r["sample_id"])) for x in (r["response_a"], r["response_b"])]
        assert r["label"] == ("A" if right == [True, False] else "B" if right == [False, True] else "C")
    assert s["counts"]["heldout_model_pairs"] == 4


def test_candidates_from_another_split_are_refused_by_name(tmp_path):
    """Candidates on calibration samples (the old wiring) fail with the split named, not 'check the labeller'."""
    from srcal.scorer.data import RScorerDataError

    data = tmp_path / "data"
    rows = [{"id": f"r{i}", "question": f"q{i}", "answer": "a"} for i in range(3)]
    write_jsonl(data / "rft.jsonl", rows)
    write_jsonl(tmp_path / "cands" / "candidates.jsonl",
                [{"id": f"c0#c{k}", "sample_id": "c0", "text": f"t{k}\nAnswer: a"} for k in range(2)])
    recipe = load_recipe("llava-1.5-7b", ["labeller.url=http://127.0.0.1:9/v1"])
    with pytest.raises(RScorerDataError, match=r"rft split \(data/rft.jsonl, 3 rows\).*split=rft"):
        run_rscorer_data(recipe, {"data": data, "candidates": tmp_path / "cands"}, tmp_path / "out")
    with pytest.raises(RScorerDataError, match="needs a 'candidates' input"):
        run_rscorer_data(recipe, {"data": data}, tmp_path / "out")


def test_shapes_world_mixes_policy_pairs_with_synthetic_ones(tmp_path):
    """Shapes: the RFT policy's candidates on rft samples give model-vs-model pairs first (train and
    held-out), synthetic teacher/corruption pairs fill the rest; held-out model rows carry the clean label.

    Hand count: 10 policy samples, held-out ceil(0.5 × 40 / 4) = 5 (≤ 10 // 2); 5 train samples × 4 pairs =
    20 model pairs of the 120 train pairs, 5 × 4 = 20 of the 40 held-out pairs."""
    from scorer_helpers import candidate_rows

    recipe = load_recipe("tiny", ["rscorer.n_train_pairs=120", "rscorer.n_heldout_pairs=40"])
    samples, cands = candidate_rows(recipe, 10, 5)
    write_jsonl(tmp_path / "data" / "rft.jsonl", samples)
    write_jsonl(tmp_path / "cands" / "candidates.jsonl", cands)
    s = run_rscorer_data(recipe, {"data": tmp_path / "data", "candidates": tmp_path / "cands"}, tmp_path / "out")
    assert s["counts"]["policy_samples_train"] == 5 and s["counts"]["policy_samples_heldout"] == 5
    assert s["counts"]["train_model_pairs"] == 20 and s["counts"]["heldout_model_pairs"] == 20
    assert s["counts"]["train_pairs"] == 120 and s["counts"]["heldout_pairs"] == 40
    held = [json.loads(x) for x in (tmp_path / "out" / "heldout.jsonl").read_text().splitlines()]
    model = [r for r in held if r["source_a"] == r["source_b"] == "model"]
    assert len(model) == 40 and all(r["clean_label"] in "ABC" and r["aux_a"] for r in model)
    assert {r["source_a"] for r in held} - {"model"}  # synthetic ones too
    assert not {r["sample_id"] for r in model} & {json.loads(x)["sample_id"] for x in
                                                  (tmp_path / "out" / "train.jsonl").read_text().splitlines()}
