"""Stage rscorer-train: both trainers really train (parameters change, losses finite) and write a judge
directory that reloads through the Auto classes, plus held-out metrics computed by hand-checked rules."""

from __future__ import annotations

import json
import math

import pytest
from scorer_helpers import tiny_recipe

from srcal.scorer.data import run_rscorer_data
from srcal.scorer.train import heldout_metrics, lr_at, run_rscorer_train


def test_heldout_metrics_by_hand():
    """Two pairs in both orders + a tie pair.
    p1: label A/B (ab/ba), predicted A then B → agree 2/2, consistent.
    p2: label B/A, predicted A then A → agree 1/2 (ba right), inconsistent (A vs swap(A)=B).
    p3: label C/C, predicted C then A → tie recall 1/2; consistency: C vs swap(A)=B → inconsistent.
    agreement (non-tie) = 3/4; consistency = 1/3; predicted tie share = 1/6."""
    rows = [{"pair_id": p, "order": o, "label": lab, "clean_label": lab}
            for p, o, lab in [("p1", "ab", "A"), ("p1", "ba", "B"), ("p2", "ab", "B"), ("p2", "ba", "A"),
                              ("p3", "ab", "C"), ("p3", "ba", "C")]]
    A, B, C = [0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]
    m = heldout_metrics(rows, [A, B, A, A, C, A])
    assert m["heldout_agreement"] == pytest.approx(3 / 4)
    assert m["position_consistency"] == pytest.approx(1 / 3)
    assert m["tie_recall"] == pytest.approx(1 / 2)
    assert m["predicted_tie_share"] == pytest.approx(1 / 6)
    assert m["heldout_pairs"] == 3 and m["heldout_non_tie_rows"] == 4


def test_lr_schedule():
    assert lr_at(0, 0.0, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(50, 0.5, 1.0, 10) == pytest.approx(0.5)
    assert lr_at(99, 1.0, 1.0, 10) == pytest.approx(0.0)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    recipe = tiny_recipe()
    out = tmp_path_factory.mktemp("rdata")
    run_rscorer_data(recipe, {}, out)
    return out


def _check_judge_dir(out, label_ids):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    AutoModelForCausalLM.from_pretrained(out)
    meta = json.loads((out / "srcal_judge.json").read_text())
    assert {k: tok(" " + k, add_special_tokens=False)["input_ids"][0] for k in "ABC"} == meta["label_token_ids"]
    m = json.loads((out / "heldout_metrics.json").read_text())
    assert 0.0 <= m["heldout_agreement"] <= 1.0 and m["heldout_pairs"] == 20
    return m


def test_aux_trainer_trains_and_writes_a_judge(pairs, tmp_path):
    recipe = tiny_recipe("rscorer.steps=3")
    out = tmp_path / "judge"
    summary = run_rscorer_train(recipe, {"rscorer_data": pairs}, out)
    assert summary["counts"]["params_changed"] == summary["counts"]["params"]  # every tensor moved
    log = json.loads((out / "train_log.json").read_text())
    assert log["steps"] == 3
    for entry in log["history"]:
        assert all(math.isfinite(v) for k, v in entry.items() if k not in ("step", "s"))
        assert {"verdict", "tags", "counts", "lm"} <= set(entry)  # every auxiliary target is in use
    _check_judge_dir(out, None)


def test_trl_sft_trainer_on_the_tiny_judge(pairs, tmp_path):
    """The real recipes' path (TRL SFT, loss on the verdict token), run on the tiny judge."""
    pytest.importorskip("trl")
    recipe = tiny_recipe("rscorer.trainer=trl", "rscorer.steps=2", "rscorer.lr=1e-3")
    out = tmp_path / "judge"
    summary = run_rscorer_train(recipe, {"rscorer_data": pairs}, out)
    assert summary["counts"]["params_changed"] > 0
    log = json.loads((out / "train_log.json").read_text())
    assert log["steps"] == 2 and log["first_loss"] is not None and math.isfinite(log["last_loss"])
    _check_judge_dir(out, None)
