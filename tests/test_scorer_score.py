"""Stage score: schedules, judgments.jsonl, resume, missing verdicts never become ties, independent mode."""

from __future__ import annotations

import json

import pytest
from scorer_helpers import candidate_rows, tiny_recipe, untrained_judge, write_jsonl

from srcal.serve.client import Failure
from srcal.scorer import score as S


def test_pair_schedule_counts():
    assert S.pair_schedule(1, "all") == []
    assert len(S.pair_schedule(5, "all")) == 20  # N(N-1)
    assert S.pair_schedule(2, "adjacent") == [(0, 1), (1, 0)]
    ring = S.pair_schedule(5, "adjacent")
    assert len(ring) == 10 and (4, 0) in ring and (0, 4) in ring  # 2N, wraps around
    assert len(S.pair_schedule(6, "all", max_pairs=20)) == 12  # 30 > 20 → ring
    with pytest.raises(ValueError):
        S.pair_schedule(3, "swiss")


def test_independent_pair_probs_by_hand():
    """pa = (0.5, 0.5) on scores (1, 2), pb = (1, 0): P(a>b) = 0.5·1 = 0.5, P(a<b) = 0, P(=) = 0.5·1 = 0.5."""
    assert S.independent_pair_probs([0.5, 0.5], [1.0, 0.0]) == pytest.approx((0.5, 0.0, 0.5))
    gt, lt, eq = S.independent_pair_probs([0.2, 0.3, 0.5], [0.1, 0.6, 0.3])
    assert gt + lt + eq == pytest.approx(1.0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    recipe = tiny_recipe("score.commit_every=1")
    root = tmp_path_factory.mktemp("score")
    judge = untrained_judge(recipe, root / "judge")
    samples, rows = candidate_rows(recipe, 3, 3)
    rows.append({"id": "lonely#c0", "sample_id": "lonely", "index": 0, "text": "Answer: red"})
    write_jsonl(root / "data" / "calib.jsonl", samples)
    write_jsonl(root / "cands" / "candidates.jsonl", rows)
    return recipe, root, judge


def _inputs(root, judge):
    return {"candidates": root / "cands", "judge": judge, "data": root / "data"}


def _read(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_scores_all_ordered_pairs_and_resumes(setup, tmp_path):
    recipe, root, judge = setup
    out = tmp_path / "score"
    summary = S.run_score(recipe, _inputs(root, judge), out)
    assert summary["counts"] == {"samples": 3, "scheduled_pairs": 18, "judged_now": 18, "resumed": 0,
                                 "missing": 0, "rejected_samples": 1}
    rows = _read(out / "judgments.jsonl")
    assert len({(r["id"], r["a"], r["b"]) for r in rows}) == 18
    for r in rows:
        assert r["a"] != r["b"] and r["p_A"] + r["p_B"] + r["p_C"] == pytest.approx(1.0, abs=1e-4)
    assert _read(out / "rejected.jsonl")[0]["id"] == "lonely"
    # a re-run judges nothing new
    again = S.run_score(recipe, _inputs(root, judge), out)
    assert again["counts"]["judged_now"] == 0 and again["counts"]["resumed"] == 18
    # a run killed mid-write: keep 7 rows and a torn line; the re-run judges exactly the 11 others
    lines = (out / "judgments.jsonl").read_text().splitlines()
    (out / "judgments.jsonl").write_text("\n".join(lines[:7]) + "\n" + lines[7][:25])
    third = S.run_score(recipe, _inputs(root, judge), out)
    assert third["counts"]["resumed"] == 7 and third["counts"]["judged_now"] == 11
    final = _read(out / "judgments.jsonl")
    assert len(final) == 18 and len({(r["id"], r["a"], r["b"]) for r in final}) == 18
    # the same judge gives the same probabilities after resume
    before = {(r["id"], r["a"], r["b"]): r["p_A"] for r in rows}
    assert all(before[(r["id"], r["a"], r["b"])] == pytest.approx(r["p_A"], abs=1e-4) for r in final)


class FlakyJudge:
    """Fails every third read the way the remote judge reports a dead read."""

    def __init__(self):
        self.calls = 0

    def read(self, groups):
        out = []
        for g in groups:
            res = []
            for _ in g:
                self.calls += 1
                res.append(Failure("unparseable", "no verdict label") if self.calls % 3 == 0 else [0.6, 0.3, 0.1])
            out.append(res)
        return out


def test_missing_verdicts_are_recorded_not_tied(setup, tmp_path, monkeypatch):
    recipe, root, judge = setup
    monkeypatch.setattr(S, "make_judge", lambda recipe, judge_dir, url=None: FlakyJudge())
    out = tmp_path / "score"
    summary = S.run_score(recipe, _inputs(root, judge), out)
    missing = _read(out / "missing.jsonl")
    assert summary["counts"]["missing"] == len(missing) == 6 and summary["missing_kinds"] == {"unparseable": 6}
    judged = {(r["id"], r["a"], r["b"]) for r in _read(out / "judgments.jsonl")}
    assert len(judged) == 12 and not judged & {(m["id"], m["a"], m["b"]) for m in missing}
    assert all(r["p_C"] == 0.1 for r in _read(out / "judgments.jsonl"))
    # the re-run retries only the missing pairs
    monkeypatch.setattr(S, "make_judge", lambda recipe, judge_dir, url=None: FlakyJudge())
    again = S.run_score(recipe, _inputs(root, judge), out)
    assert again["counts"]["resumed"] == 12 and again["counts"]["judged_now"] + again["counts"]["missing"] == 6


def test_independent_mode_writes_scores_and_pair_probabilities(setup, tmp_path):
    recipe, root, judge = setup
    recipe = tiny_recipe("score.mode=independent")
    out = tmp_path / "indep"
    summary = S.run_score(recipe, _inputs(root, judge), out)
    scores = _read(out / "scores.jsonl")
    assert len(scores) == 9 and all(1.0 <= s["score"] <= 10.0 for s in scores)
    rows = _read(out / "judgments.jsonl")
    assert summary["counts"]["judged_now"] == len(rows) == 18
    assert all(r["p_A"] + r["p_B"] + r["p_C"] == pytest.approx(1.0, abs=1e-4) for r in rows)
