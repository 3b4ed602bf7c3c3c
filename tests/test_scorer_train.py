"""Stage rscorer-train: both trainers really train (parameters change, losses finite) and write a judge
directory that reloads through the Auto classes, plus held-out metrics computed by hand-checked rules."""

from __future__ import annotations

import json
import math

import pytest
from scorer_helpers import tiny_recipe

from srcal.scorer.data import run_rscorer_data
from srcal.scorer.train import heldout_metrics, lr_at, quality_margin_class, run_rscorer_train


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


def test_policy_agreement_counts_only_model_vs_model_non_tie_rows():
    """Rows (clean label, prediction): m1 model|model A/B → A, B (2 agree); m2 model|model B/A → A, A
    (1 agrees); m3 model|model C/C (tie: not counted); t1 teacher|model A/B → B, A (not a policy pair).
    policy_agreement = 3/4 over 2 pairs; the overall clean agreement counts t1's 2 misses: 3/6."""
    spec = [("m1", "ab", "A", "model|model"), ("m1", "ba", "B", "model|model"),
            ("m2", "ab", "B", "model|model"), ("m2", "ba", "A", "model|model"),
            ("m3", "ab", "C", "model|model"), ("m3", "ba", "C", "model|model"),
            ("t1", "ab", "A", "teacher|model"), ("t1", "ba", "B", "model|teacher")]
    rows = [{"pair_id": p, "order": o, "label": lab, "clean_label": lab, "source": src,
             "source_a": src.split("|")[0], "source_b": src.split("|")[1]} for p, o, lab, src in spec]
    A, B, C = [0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]
    m = heldout_metrics(rows, [A, B, A, A, C, C, B, A])
    assert m["policy_agreement"] == pytest.approx(3 / 4)
    assert (m["policy_pairs"], m["policy_rows"]) == (2, 4)
    assert m["clean_agreement"] == pytest.approx(3 / 6)
    for r in rows:  # rows without source_a/_b (older data) are read from "source"
        del r["source_a"], r["source_b"]
    assert heldout_metrics(rows, [A, B, A, A, C, C, B, A])["policy_agreement"] == pytest.approx(3 / 4)
    assert heldout_metrics(rows[6:], [B, A])["policy_agreement"] is None


def test_quality_margin_class_by_hand():
    """Class 3 = equal quality; A better by 1.5 rounds to 2 → class 5; beyond ±3 clipped; no oracle → ignored."""
    assert quality_margin_class({"quality_a": -1.0, "quality_b": -1.0}) == 3
    assert quality_margin_class({"quality_a": -0.5, "quality_b": -2.0}) == 5
    assert quality_margin_class({"quality_a": -6.0, "quality_b": 0.0}) == 0
    assert quality_margin_class({"quality_a": 4.0, "quality_b": -1.0}) == 6
    assert quality_margin_class({"label": "A"}) == -100


def test_lr_schedule():
    assert lr_at(0, 0.0, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(50, 0.5, 1.0, 10) == pytest.approx(0.5)
    assert lr_at(99, 1.0, 1.0, 10) == pytest.approx(0.0)
    # held at the peak for the first 60 %, then a cosine over the remaining 40 %
    assert lr_at(50, 0.5, 1.0, 10, hold=0.6) == pytest.approx(1.0)
    assert lr_at(80, 0.8, 1.0, 10, hold=0.6) == pytest.approx(0.5)
    assert lr_at(99, 1.0, 1.0, 10, hold=0.6) == pytest.approx(0.0)


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


def test_two_trainings_give_identical_weights(pairs, tmp_path):
    """Same seed, same data, same steps → bit-identical judges: nothing in the loop reads the clock."""
    from safetensors.torch import load_file

    recipe = tiny_recipe("rscorer.steps=3")
    for name in ("a", "b"):
        run_rscorer_train(recipe, {"rscorer_data": pairs}, tmp_path / name)
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    ma = json.loads((tmp_path / "a" / "heldout_metrics.json").read_text())
    mb = json.loads((tmp_path / "b" / "heldout_metrics.json").read_text())
    drop = ("train_s",)
    assert {k: v for k, v in ma.items() if k not in drop} == {k: v for k, v in mb.items() if k not in drop}


def test_policy_agreement_is_measured_on_the_policys_held_out_candidates(tmp_path):
    """rscorer-data given the policy's candidates on rft samples puts model-vs-model pairs into the held-out
    split (scorer/data.py); the trained judge's heldout_metrics.json then reports policy_agreement over
    them — a rate, on as many pairs as the held-out split has model-vs-model pairs."""
    from scorer_helpers import candidate_rows, write_jsonl

    recipe = tiny_recipe("rscorer.steps=2")
    samples, cands = candidate_rows(recipe, 8, 4)
    write_jsonl(tmp_path / "data" / "rft.jsonl", samples)
    write_jsonl(tmp_path / "cands" / "candidates.jsonl", cands)
    rdata = tmp_path / "rdata"
    run_rscorer_data(recipe, {"data": tmp_path / "data", "candidates": tmp_path / "cands"}, rdata)
    held = [json.loads(x) for x in (rdata / "heldout.jsonl").read_text().splitlines()]
    model_pairs = {r["pair_id"] for r in held if r["source_a"] == r["source_b"] == "model"
                   and r["clean_label"] != "C"}
    assert model_pairs
    run_rscorer_train(recipe, {"rscorer_data": rdata}, tmp_path / "judge")
    m = json.loads((tmp_path / "judge" / "heldout_metrics.json").read_text())
    assert m["policy_pairs"] == len(model_pairs) and m["policy_rows"] == 2 * len(model_pairs)
    assert 0.0 <= m["policy_agreement"] <= 1.0


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


def test_wall_time_cap_is_gone_and_names_its_replacement():
    """rscorer.max_train_s annealed by wall time, so the judge depended on machine load; a recipe that still
    sets it is refused with the key that replaced it (not a generic 'unknown key')."""
    from srcal.config import RecipeError, load_recipe

    with pytest.raises(RecipeError, match=r"rscorer.max_train_s: removed; use rscorer.steps"):
        load_recipe("tiny", ["rscorer.max_train_s=600"])


def test_the_judges_one_thread_does_not_outlive_its_stage(tmp_path):
    """rscorer-train pins torch to ``rscorer.threads`` = 1, a process-wide setting; run through the stage
    runner (what ``srcal run`` does for every step in one process) the count is given back afterwards, so
    the rounds' search, DPO and eval are not left on one thread."""
    import torch

    from srcal import stages

    torch.set_num_threads(2)
    try:
        recipe = tiny_recipe("rscorer.steps=1", "rscorer.threads=1")
        stages.execute("rscorer-data", recipe, {}, str(tmp_path / "rdata"))
        stages.execute("rscorer-train", recipe, {"rscorer_data": str(tmp_path / "rdata")}, str(tmp_path / "judge"))
        assert json.loads((tmp_path / "judge" / "summary.json").read_text())["stage"] == "rscorer-train"
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(2)


def test_diff_view_counts_only_what_the_judge_is_shown(pairs):
    """facts+diff drops the claims both sides make, so the count targets at the Check slots must drop them
    too: for a response paired with itself every claim goes, leaving no true claim and only the answer's
    errors (wrong answer, conclusion mismatch) — the oracle's error count minus its false claims."""
    from srcal.scorer.train import build_tiny_judge, encode_row

    recipe = tiny_recipe("rscorer.input_format=facts+diff")
    tok = build_tiny_judge(recipe, pairs.parent / "tok_diff")  # reloaded through AutoTokenizer
    rows = [json.loads(x) for x in (pairs / "train.jsonl").read_text().splitlines()]
    samples = {s["id"]: s for s in map(json.loads, (pairs / "samples.jsonl").read_text().splitlines())}
    row = next(r for r in rows if r.get("aux_a") and sum(not t for t in r["aux_a"]["claims_true"]))
    same = {**row, "response_b": row["response_a"], "aux_b": row["aux_a"], "label": "C"}
    item = encode_row(same, samples[row["sample_id"]], recipe, tok, max_count=8)
    aux = row["aux_a"]
    answer_errors = aux["errors"] - sum(not t for t in aux["claims_true"])
    assert item["true"] == [0, 0] and item["err"] == [answer_errors, answer_errors]
    assert item["tag"].count(0) + item["tag"].count(1) == 2  # only the two answer tags remain
    # without the diff view (facts+ref) the count is the oracle's, whatever the other side says
    full = encode_row(same, samples[row["sample_id"]], tiny_recipe("rscorer.input_format=facts+ref"), tok, max_count=8)
    assert full["err"] == [min(aux["errors"], 7)] * 2 and full["true"] == [min(aux["n_true"], 7)] * 2
