"""Stage rscorer-data: labelled pairs in both orders, ties kept, held-out scenes disjoint."""

from __future__ import annotations

import json
from collections import Counter

import pytest

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
