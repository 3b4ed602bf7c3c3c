"""Curation math against hand-computed values, and the stage's keep/drop behaviour."""

from __future__ import annotations

import json

import numpy as np
import pytest

from srcal import curate
from srcal.config import load_recipe


def test_first_order_win_splits_ties():
    """p = (A .6, B .2, C .2): P(A wins) = .6 + .2/2 = .7."""
    assert curate.first_order_win((0.6, 0.2, 0.2)) == pytest.approx(0.7)


def test_verdict_probs_renormalises_and_rejects_garbage():
    """(2, 1, 1) sums to 4 → (.5, .25, .25); a missing p_C counts as 0."""
    assert curate.verdict_probs({"p_A": 2, "p_B": 1, "p_C": 1}) == pytest.approx((0.5, 0.25, 0.25))
    assert curate.verdict_probs({"p_A": 0.3, "p_B": 0.1}) == pytest.approx((0.75, 0.25, 0.0))
    with pytest.raises(ValueError):
        curate.verdict_probs({"p_A": -0.1, "p_B": 1, "p_C": 0})
    with pytest.raises(ValueError):
        curate.verdict_probs({"p_A": 0, "p_B": 0, "p_C": 0})


def test_debiased_pair_cancels_position_bias():
    """A judge that always says A: reading (i,j) gives P_first(i≻j) = 1, reading (j,i) gives
    P(j wins | j first) = 1 so P_second(i≻j) = 0. P = ½(1 + 0) = .5, consistency 1 − |1 − 0| = 0,
    confidence |2·.5 − 1|·0 = 0."""
    m = curate.build_pair_matrix(2, [(0, 1, (1.0, 0.0, 0.0)), (1, 0, (1.0, 0.0, 0.0))])
    assert m.P[0, 1] == pytest.approx(0.5)
    assert m.consistency[0, 1] == pytest.approx(0.0)
    assert m.C[0, 1] == pytest.approx(0.0)


def test_pair_matrix_hand_computed():
    """Reading (0,1): (A .7, B .1, C .2) → P_first(0≻1) = .7 + .1 = .8.
    Reading (1,0): (A .2, B .6, C .2) → P(1 wins | 1 first) = .2 + .1 = .3, so P_second(0≻1) = .7.
    P(0≻1) = ½(.8 + .7) = .75; consistency = 1 − |.8 − .7| = .9; confidence = |1.5 − 1|·.9 = .45."""
    m = curate.build_pair_matrix(2, [(0, 1, (0.7, 0.1, 0.2)), (1, 0, (0.2, 0.6, 0.2))])
    assert m.P[0, 1] == pytest.approx(0.75)
    assert m.P[1, 0] == pytest.approx(0.25)
    assert m.consistency[0, 1] == pytest.approx(0.9)
    assert m.C[0, 1] == pytest.approx(0.45)
    assert m.C[1, 0] == pytest.approx(0.45)


def test_single_order_reading_uses_decisiveness_only():
    """Only (0,1) read as (A .9, B .1, C 0): P = .9, consistency unknown → 1, confidence |1.8 − 1| = .8."""
    m = curate.build_pair_matrix(3, [(0, 1, (0.9, 0.1, 0.0))])
    assert m.P[0, 1] == pytest.approx(0.9)
    assert m.C[0, 1] == pytest.approx(0.8)
    assert not m.judged[0, 2] and not m.judged[1, 2]


def test_repeated_readings_are_averaged_not_double_counted():
    """(0,1) read twice: P_first = mean(.9, .5) = .7 (C split: .5 = .5 + 0)."""
    m = curate.build_pair_matrix(2, [(0, 1, (0.9, 0.1, 0.0)), (0, 1, (0.5, 0.5, 0.0))])
    assert m.P[0, 1] == pytest.approx(0.7)


def _matrix(P01, P02, P12, C01, C02, C12):
    P = np.array([[0.5, P01, P02], [1 - P01, 0.5, P12], [1 - P02, 1 - P12, 0.5]])
    C = np.array([[0, C01, C02], [C01, 0, C12], [C02, C12, 0]], dtype=float)
    judged = ~np.eye(3, dtype=bool)
    return curate.PairMatrix(n=3, P=P, C=C, judged=judged, consistency=np.ones((3, 3)))


def test_weighted_vs_uniform_scores_hand_computed():
    """P(0≻1)=.9 (c .8), P(0≻2)=.5 (c 0), P(1≻2)=.6 (c .2).
    uniform:  s0 = (.9+.5)/2 = .7;  s1 = (.1+.6)/2 = .35;  s2 = (.5+.4)/2 = .45.
    weighted: s0 = (.8·.9 + 0·.5)/.8 = .9;  s1 = (.8·.1 + .2·.6)/1.0 = .2;  s2 = (0·.5 + .2·.4)/.2 = .4.
    Both pick 0 as best and 1 as worst here, but the weighted score ignores the undecided 0-vs-2 pair."""
    m = _matrix(0.9, 0.5, 0.6, 0.8, 0.0, 0.2)
    assert curate.uniform_win_scores(m) == pytest.approx([0.7, 0.35, 0.45])
    assert curate.weighted_win_scores(m) == pytest.approx([0.9, 0.2, 0.4])


def test_weighted_and_uniform_can_disagree_on_best():
    """P(0≻1)=.99 (c .98), P(0≻2)=.45 (c .1, a near coin flip), P(1≻2)=.05 (c .9).
    uniform:  s0 = (.99+.45)/2 = .72,  s1 = (.01+.05)/2 = .03,  s2 = (.55+.95)/2 = .75  → best 2.
    weighted: s0 = (.98·.99 + .1·.45)/1.08 = (.9702+.045)/1.08 = .94,
              s1 = (.98·.01 + .9·.05)/1.88 = .0548/1.88,
              s2 = (.1·.55 + .9·.95)/1.0 = .055 + .855 = .91                            → best 0.
    Uniform hands the win to 2 on the strength of an undecided comparison; weighted does not."""
    m = _matrix(0.99, 0.45, 0.05, 0.98, 0.1, 0.9)
    assert curate.uniform_win_scores(m) == pytest.approx([0.72, 0.03, 0.75])
    assert curate.weighted_win_scores(m) == pytest.approx([0.94, 0.0548 / 1.88, 0.91])
    assert curate.select_pair(m, "uniform", min_margin=0, min_confidence=0).best == 2
    assert curate.select_pair(m, "weighted", min_margin=0, min_confidence=0).best == 0


def test_weighted_falls_back_to_half_without_confident_pairs():
    m = _matrix(0.5, 0.5, 0.5, 0.0, 0.0, 0.0)
    assert curate.weighted_win_scores(m) == pytest.approx([0.5, 0.5, 0.5])


def test_bradley_terry_two_candidates_matches_closed_form():
    """Two candidates, P(0≻1) = .8, unweighted, no prior: BT MLE has π0/π1 = W01/W10 = .8/.2 = 4,
    normalised to mean log 0: log π = ±½ log 4 = ±0.693147…"""
    m = curate.build_pair_matrix(2, [(0, 1, (0.8, 0.2, 0.0))])
    s = curate.bradley_terry_scores(m, weighted=False, prior=0.0)
    assert s == pytest.approx([0.5 * np.log(4), -0.5 * np.log(4)], abs=1e-6)


def test_bradley_terry_prior_keeps_a_clean_sweep_finite():
    m = _matrix(1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    s = curate.bradley_terry_scores(m)
    assert np.all(np.isfinite(s)) and s[0] > s[1] > s[2]


def test_select_pair_filters_in_order():
    """P(0≻1)=.9 (c .8), P(0≻2)=.5 (c 0), P(1≻2)=.6 (c .2): weighted best 0, worst 1,
    margin = P(0≻1) − .5 = .4; mean confidence = (.8 + 0 + .2)/3 = .3333."""
    m = _matrix(0.9, 0.5, 0.6, 0.8, 0.0, 0.2)
    sel = curate.select_pair(m, "weighted", min_margin=0.1, min_confidence=0.1)
    assert (sel.best, sel.worst, sel.drop_reason) == (0, 1, None)
    assert sel.margin == pytest.approx(0.4)
    assert sel.confidence == pytest.approx(1.0 / 3.0)
    assert curate.select_pair(m, "weighted", min_margin=0.45, min_confidence=0.1).drop_reason == "low_margin"
    assert curate.select_pair(m, "weighted", min_margin=0.1, min_confidence=0.4).drop_reason == "low_confidence"
    wrong = curate.select_pair(m, "weighted", min_margin=0.1, min_confidence=0.1,
                               correct=[False, True, True], require_correct=True)
    assert wrong.drop_reason == "chosen_wrong"
    unknown = curate.select_pair(m, "weighted", min_margin=0.1, min_confidence=0.1,
                                 correct=[None, True, True], require_correct=True)
    assert unknown.drop_reason is None  # no ground truth → cannot be wrong


def test_chosen_pool_correct_picks_the_best_right_candidate():
    """Same matrix. Weighted scores: s0 = (.9·.8 + .5·0)/.8 = .9, s1 = (.1·.8 + .6·.2)/1.0 = .2,
    s2 = (.5·0 + .4·.2)/.2 = .4. With 0 wrong, the best right candidate is 2 (s .4) and the worst is 1,
    but the judge read P(2≻1) = .4 directly, so the margin is −.1 and the sample is dropped as low_margin:
    the ground truth vetoes wrong answers, it never overrules the judge's ranking."""
    m = _matrix(0.9, 0.5, 0.6, 0.8, 0.0, 0.2)
    sel = curate.select_pair(m, "weighted", min_margin=0.0, min_confidence=0.0,
                             correct=[False, True, True], chosen_pool="correct")
    assert (sel.best, sel.worst) == (2, 1)
    assert sel.margin == pytest.approx(-0.1)
    assert sel.drop_reason == "low_margin"
    none_right = curate.select_pair(m, "weighted", min_margin=0.0, min_confidence=0.0,
                                    correct=[False, False, False], chosen_pool="correct")
    assert none_right.drop_reason == "no_correct_candidate"
    all_right = curate.select_pair(m, "weighted", min_margin=0.1, min_confidence=0.1,
                                   correct=[True, True, True], chosen_pool="correct")
    assert (all_right.best, all_right.worst, all_right.drop_reason) == (0, 1, None)


def test_rejected_is_never_the_chosen_one_under_the_correct_pool():
    """Same matrix, weighted scores s = (.9, .2, .4); only candidate 1 — the judge's overall worst — is
    right. Before the fix rejected = argmin over all = 1 = chosen, and the sample was dropped as
    no_preference. Now rejected = the worst of the others {0 (.9), 2 (.4)} = 2, and the margin is the
    judge's direct reading P(1≻2) − ½ = .6 − .5 = +.1 (the weighted score and the direct reading disagree
    on 1 vs 2), so the pair is kept at min_margin 0 and dropped as low_margin at .2."""
    m = _matrix(0.9, 0.5, 0.6, 0.8, 0.0, 0.2)
    sel = curate.select_pair(m, "weighted", min_margin=0.0, min_confidence=0.0,
                             correct=[False, True, False], chosen_pool="correct")
    assert (sel.best, sel.worst, sel.drop_reason) == (1, 2, None)
    assert sel.margin == pytest.approx(0.1)
    strict = curate.select_pair(m, "weighted", min_margin=0.2, min_confidence=0.0,
                                correct=[False, True, False], chosen_pool="correct")
    assert (strict.best, strict.worst, strict.drop_reason) == (1, 2, "low_margin")


def test_pick_hand_computed():
    """s = (.3, .9, .1, .1): all → chosen 1 (.9), rejected 2 (.1; tie with 3 → lower index).
    correct (T, F, F, T) → chosen 0 (.3), rejected = worst of {1, 2, 3} = 2.
    rap_ok (F, F, T, T) with chosen_rap_format → chosen 2 (.1 ties 3; lower index), rejected = worst of
    {0, 1, 3} = 3 (.1). Nothing right → no_correct_candidate; no ground truth (all None) → the whole pool."""
    s = [0.3, 0.9, 0.1, 0.1]
    assert curate.pick(s) == (1, 2, None)
    assert curate.pick(s, correct=[True, False, False, True], chosen_pool="correct") == (0, 2, None)
    assert curate.pick(s, rap_ok=[False, False, True, True], chosen_rap_format=True) == (2, 3, None)
    assert curate.pick(s, correct=[False] * 4, chosen_pool="correct")[2] == "no_correct_candidate"
    assert curate.pick(s, correct=[None] * 4, chosen_pool="correct") == (1, 2, None)
    assert curate.pick(s, rap_ok=[False] * 4, chosen_rap_format=True)[2] == "no_well_formed_candidate"


def test_no_ground_truth_sample_falls_back_to_all_candidates():
    """Before the fix, chosen_pool=correct with correct = (None, None, None) found no right candidate and
    dropped the sample (every sample of a split without answers). Now it is selected like chosen_pool=all:
    s = (.9, .2, .4) → chosen 0, rejected 1, margin P(0≻1) − ½ = .4."""
    m = _matrix(0.9, 0.5, 0.6, 0.8, 0.0, 0.2)
    sel = curate.select_pair(m, "weighted", min_margin=0.1, min_confidence=0.1, correct=[None] * 3,
                             chosen_pool="correct", require_correct=True)
    assert (sel.best, sel.worst, sel.drop_reason) == (0, 1, None)
    assert sel.margin == pytest.approx(0.4)


def test_oracle_selection_hand_computed():
    """Factuality f = (.5, None, 1.0, .25); candidate 1 makes no checkable claim and is not ranked.
    all: chosen 2 (1.0), rejected 3 (.25), margin ½(1.0 − .25) = .375, confidence 1.
    correct (T, T, F, T): chosen = best right rankable = 0 (.5), rejected = worst of {2, 3} = 3,
    margin ½(.5 − .25) = .125 → kept at min_margin .1, low_margin at .2.
    require_correct with pool all: chosen 2 is wrong → chosen_wrong."""
    f = [0.5, None, 1.0, 0.25]
    sel = curate.select_by_oracle(f, min_margin=0.1, min_confidence=0.5)
    assert (sel.best, sel.worst, sel.drop_reason) == (2, 3, None)
    assert sel.margin == pytest.approx(0.375) and sel.confidence == 1.0
    right = [True, True, False, True]
    sel = curate.select_by_oracle(f, min_margin=0.1, min_confidence=0.5, correct=right, chosen_pool="correct")
    assert (sel.best, sel.worst, sel.drop_reason) == (0, 3, None)
    assert sel.margin == pytest.approx(0.125)
    assert curate.select_by_oracle(f, min_margin=0.2, min_confidence=0.5, correct=right,
                                   chosen_pool="correct").drop_reason == "low_margin"
    assert curate.select_by_oracle(f, min_margin=0.1, min_confidence=0.5, correct=right,
                                   require_correct=True).drop_reason == "chosen_wrong"
    assert curate.select_by_oracle([0.5, None, 0.5], min_margin=0, min_confidence=0).drop_reason == "no_preference"
    assert curate.select_by_oracle([None, 0.5, None], min_margin=0,
                                   min_confidence=0).drop_reason == "no_checkable_claims"


def test_judge_oracle_agreement_hand_computed():
    """Oracle quality (−1, −3, −1). Readings: (0,1) judge A, oracle A → agree; (1,0) judge A, oracle B →
    disagree; (0,2) oracle tie → not counted; (2,1) judge C, oracle A → disagree. 1 of 3."""
    readings = [(0, 1, (0.6, 0.3, 0.1)), (1, 0, (0.5, 0.4, 0.1)), (0, 2, (0.9, 0.05, 0.05)),
                (2, 1, (0.2, 0.2, 0.6))]
    assert curate.judge_oracle_agreement(readings, [-1.0, -3.0, -1.0]) == (1, 3)


def test_select_pair_no_preference_when_all_equal():
    m = _matrix(0.5, 0.5, 0.5, 0.0, 0.0, 0.0)
    assert curate.select_pair(m, "uniform", min_margin=0.0, min_confidence=0.0).drop_reason == "no_preference"
    noisy = _matrix(0.5 + 1e-12, 0.5, 0.5 - 1e-12, 0.0, 0.0, 0.0)  # float noise is not a preference
    assert curate.select_pair(noisy, "uniform", min_margin=0.0, min_confidence=0.0).drop_reason == "no_preference"


# ---------------------------------------------------------------------------------------------- stage


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _stage_inputs(tmp_path, n_samples=10):
    """search's format: one candidates.jsonl row per candidate; question/answer/image from data/calib.jsonl."""
    cdir, jdir, ddir = tmp_path / "cands", tmp_path / "judg", tmp_path / "data"
    for d in (cdir, jdir, ddir):
        d.mkdir()
    cands, judg, calib = [], [], []
    for s in range(n_samples):
        calib.append({"id": f"s{s}", "image": f"images/s{s}.png", "question": "What colour is the circle?",
                      "answer": "red", "category": "perception", "source": "shapes"})
        for i, a in reversed(list(enumerate(("red", "blue", "green")))):  # out of order on purpose
            cands.append({"id": f"s{s}#c{i}", "sample_id": f"s{s}", "index": i,
                          "text": f"The circle is {a}.\nAnswer: {a}", "answer": a})
        # candidate 0 beats everyone decisively in both orders; 1 vs 2 a tie
        for a, b in [(0, 1), (0, 2)]:
            judg.append({"id": f"s{s}", "a": a, "b": b, "p_A": 0.9, "p_B": 0.05, "p_C": 0.05})
            judg.append({"id": f"s{s}", "a": b, "b": a, "p_A": 0.05, "p_B": 0.9, "p_C": 0.05})
        judg.append({"id": f"s{s}", "a": 1, "b": 2, "p_A": 0.1, "p_B": 0.1, "p_C": 0.8})
        judg.append({"id": f"s{s}", "a": 2, "b": 1, "p_A": 0.1, "p_B": 0.1, "p_C": 0.8})
    judg.append({"id": "s0", "a": 0, "b": 1, "p_A": "x"})  # malformed: counted, not fatal
    _write(cdir / "candidates.jsonl", cands)
    _write(jdir / "judgments.jsonl", judg)
    _write(ddir / "calib.jsonl", calib)
    return {"candidates": cdir, "judgments": jdir, "data": ddir}


def test_run_curate_writes_pairs_and_counts(tmp_path):
    recipe = load_recipe("tiny", ["curate.min_pairs=5"])
    summary = curate.run_curate(recipe, _stage_inputs(tmp_path), tmp_path / "out")
    rows = [json.loads(x) for x in (tmp_path / "out" / "pairs.jsonl").read_text().splitlines()]
    assert summary["counts"] == {"samples": 10, "kept": 10, "dropped": 0}
    assert not (tmp_path / "out" / "summary.json").exists()  # srcal.stages.execute writes it, once
    assert summary["dropped"] == {"malformed_judgment: ValueError": 1}
    assert rows[0]["chosen"] == "The circle is red.\nAnswer: red" and rows[0]["chosen_correct"] is True
    assert rows[0]["rejected_correct"] is False and rows[0]["chosen_index"] == 0
    assert rows[0]["question"] == "What colour is the circle?" and rows[0]["image"] == "images/s0.png"
    assert sum(summary["pair_confidence_hist"]["counts"]) == 30


def test_run_curate_too_few_pairs_names_thresholds(tmp_path):
    from srcal.errors import StageError

    recipe = load_recipe("tiny", ["curate.min_pairs=5", "curate.min_margin=0.49"])
    with pytest.raises(StageError, match="curate.min_margin"):
        curate.run_curate(recipe, _stage_inputs(tmp_path), tmp_path / "out")
    dropped = (tmp_path / "out" / "dropped.jsonl").read_text().splitlines()
    assert len(dropped) == 10 and json.loads(dropped[0])["reason"] == "low_margin"


def _shapes_inputs(tmp_path, split="calib", with_answers=True):
    """Shapes-world samples (with scenes) and their teacher RAPs and corruptions as candidates, no
    judgments; the search summary names ``split``, the file the curate stage must read truth from."""
    from scorer_helpers import candidate_rows, write_jsonl

    recipe = load_recipe("tiny")
    samples, rows = candidate_rows(recipe, 12, 5)
    if not with_answers:
        samples = [{k: v for k, v in s.items() if k != "answer"} for s in samples]
    cdir, ddir = tmp_path / "cands", tmp_path / "data"
    write_jsonl(cdir / "candidates.jsonl", rows)
    (cdir / "summary.json").write_text(json.dumps({"split": split}))
    write_jsonl(ddir / f"{split}.jsonl", samples)
    return {"candidates": cdir, "data": ddir}, samples


def test_oracle_curation_ranks_by_factuality_from_the_searched_split(tmp_path):
    """curate.judge=oracle needs no judgments; truth and scenes come from the split the search read
    (here rft.jsonl, named in the search summary). Every kept pair's chosen side is at least as factual
    as its rejected side, by at least 2 × min_margin."""
    inputs, _ = _shapes_inputs(tmp_path, split="rft")
    recipe = load_recipe("tiny", ["curate.judge=oracle", "curate.min_margin=0.1", "curate.min_pairs=3"])
    summary = curate.run_curate(recipe, inputs, tmp_path / "out")
    pairs = [json.loads(x) for x in (tmp_path / "out" / "pairs.jsonl").read_text().splitlines()]
    assert summary["judge"] == "oracle" and summary["split"] == "rft" and len(pairs) >= 3
    for p in pairs:
        assert p["chosen_factuality"] - p["rejected_factuality"] >= 0.2 - 1e-9
        assert p["chosen_correct"] is True and p["question"]
    assert summary["oracle"]["chosen_factuality"] > summary["oracle"]["rejected_factuality"]


def test_oracle_curation_is_a_recipe_error_off_the_shapes_world(tmp_path):
    from srcal.config import RecipeError

    with pytest.raises(RecipeError, match="curate.judge"):
        load_recipe("tiny", ["curate.judge=oracle", "data.world=real", "model.base=x",
                             "data.sources=[{adapter: chartqa, path: /x}]"])
    inputs, samples = _shapes_inputs(tmp_path)
    (inputs["data"] / "calib.jsonl").write_text("".join(
        json.dumps({k: v for k, v in s.items() if k != "scene"}) + "\n" for s in samples))
    with pytest.raises(RecipeError, match="scene"):
        curate.run_curate(load_recipe("tiny", ["curate.judge=oracle"]), inputs, tmp_path / "out")


def test_correct_pool_without_any_ground_truth_is_an_error_before_selection(tmp_path):
    from srcal.errors import StageError

    inputs, _ = _shapes_inputs(tmp_path, with_answers=False)
    recipe = load_recipe("tiny", ["curate.judge=oracle", "curate.chosen_pool=correct"])
    with pytest.raises(StageError, match="chosen_pool=all"):
        curate.run_curate(recipe, inputs, tmp_path / "out")
    assert not (tmp_path / "out" / "pairs.jsonl").exists()
