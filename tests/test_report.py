"""report: metrics.json keys (DESIGN §4), the paired comparison, and a self-contained HTML page."""

from __future__ import annotations

import json

import pytest

from srcal import report
from srcal.config import load_recipe


def test_paired_bootstrap_diff_hand_computed():
    """a = (1, 0, 1, 0), b = (1, 1, 1, None): item 4 has no b value and is dropped from the pairing.
    Paired differences over items 1–3 = (0, 1, 0): mean 1/3; every bootstrap mean lies in [0, 1]."""
    a = {1: True, 2: False, 3: True, 4: False}
    b = {1: True, 2: True, 3: True, 4: None}
    diff, ci, n = report.paired_bootstrap_diff(a, b)
    assert n == 3 and diff == pytest.approx(1 / 3)
    assert 0.0 <= ci[0] <= 1 / 3 <= ci[1] <= 1.0


def test_paired_bootstrap_identical_models_gives_zero_interval():
    a = {i: i % 2 == 0 for i in range(50)}
    assert report.paired_bootstrap_diff(a, dict(a)) == (0.0, (0.0, 0.0), 50)


def _eval_artifact(root, name, correct, fact):
    d = root / f"eval_{name}"
    d.mkdir()
    preds = [{"id": f"e{i}", "category": "perception" if i % 2 else "chart", "correct": c, "rap_format": name != "base",
              "factuality": f, "consistent": c} for i, (c, f) in enumerate(zip(correct, fact))]
    (d / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    n = len(preds)
    acc = sum(correct) / n
    facts = [f for f in fact if f is not None]
    entry = {"name": name, "n": n, "accuracy": acc, "accuracy_ci": [max(0, acc - 0.1), min(1, acc + 0.1)],
             "rationale_factuality": sum(facts) / len(facts) if facts else None, "consistency": acc,
             "rap_format": 0.0 if name == "base" else 1.0,
             "per_category": {"chart": {"accuracy": acc, "rationale_factuality": 0.5},
                              "perception": {"accuracy": acc, "rationale_factuality": 0.6}}}
    (d / "metrics.json").write_text(json.dumps({"recipe": "tiny", "rounds": [entry]}))
    (d / "summary.json").write_text(json.dumps({"timings_s": {"total": 2.5}}))
    return d


@pytest.fixture
def run_inputs(tmp_path):
    inputs = {
        "eval_base": _eval_artifact(tmp_path, "base", [1, 0, 0, 0], [None] * 4),
        "eval_rft": _eval_artifact(tmp_path, "rft", [1, 1, 0, 0], [0.5, 0.5, 0.5, 0.5]),
        "eval_round1": _eval_artifact(tmp_path, "round1", [1, 1, 1, 0], [0.75, 1.0, 0.5, 0.75]),
    }
    judge = tmp_path / "judge"
    judge.mkdir()
    (judge / "heldout_metrics.json").write_text(json.dumps({"heldout_agreement": 0.85, "heldout_pairs": 300}))
    cur = tmp_path / "round1_curate"
    cur.mkdir()
    (cur / "summary.json").write_text(json.dumps({
        "counts": {"samples": 10, "kept": 7, "dropped": 3}, "dropped": {"low_margin": 2, "chosen_wrong": 1},
        "pair_confidence_hist": {"edges": [i / 10 for i in range(11)], "counts": [5, 1, 0, 0, 0, 0, 0, 0, 2, 12]},
        "mean_margin": 0.31, "timings_s": {"total": 0.4}}))
    (cur / "pairs.jsonl").write_text(json.dumps({
        "id": "c1", "question": "What colour is the <b>square</b>?", "answer": "red",
        "chosen": "The square is red.\nAnswer: red", "rejected": "The square is blue.\nAnswer: blue",
        "scores": [0.9, 0.1], "margin": 0.4, "confidence": 0.7, "chosen_index": 0, "rejected_index": 1}) + "\n")
    return {**inputs, "judge": judge, "round1_curate": cur}


def test_run_report_metrics_keys_and_paired_comparison(run_inputs, tmp_path):
    """round1 − rft per item: accuracy (0, 0, 1, 0) → +0.25; factuality (.25, .5, 0, .25) → +0.25."""
    recipe = load_recipe("tiny", ["rounds=1"])
    out = tmp_path / "report"
    report.run_report(recipe, run_inputs, out)
    m = json.loads((out / "metrics.json").read_text())
    assert list(m)[:4] == ["recipe", "rounds", "rscorer", "timings_s"]
    assert [r["name"] for r in m["rounds"]] == ["base", "rft", "round1"]
    for r in m["rounds"]:
        assert {"name", "n", "accuracy", "rationale_factuality", "consistency", "rap_format"} <= set(r)
    assert m["rscorer"]["heldout_agreement"] == 0.85 and m["rscorer"]["heldout_pairs"] == 300
    assert m["timings_s"]["eval_rft"] == 2.5 and m["timings_s"]["total"] == pytest.approx(3 * 2.5 + 0.4)
    comp = m["comparison"]["paired_diff"]
    assert m["comparison"]["b"] == "round1"
    assert comp["accuracy"]["diff"] == pytest.approx(0.25) and comp["accuracy"]["n"] == 4
    assert comp["rationale_factuality"]["diff"] == pytest.approx(0.25)
    assert m["curation"][0]["counts"]["kept"] == 7


def test_report_html_is_self_contained_and_escaped(run_inputs, tmp_path):
    recipe = load_recipe("tiny", ["rounds=1"])
    out = tmp_path / "report"
    summary = report.run_report(recipe, run_inputs, out)
    page = (out / "report.html").read_text()
    assert summary["counts"]["plots"] == 4
    assert page.count("data:image/png;base64,") == 4
    assert "src='plots/" not in page and 'src="plots/' not in page
    assert "&lt;b&gt;square&lt;/b&gt;" in page  # example text is escaped, not rendered
    md = (out / "report.md").read_text()
    assert "| round1 |" in md and "](plots/metrics_by_round.png)" in md
    assert (out / "plots" / "kept_dropped.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_tolerates_an_interval_that_misses_the_point_by_float_noise():
    """Wilson's lower bound for 0 of 300 comes out as 8.7e-19 > 0; the error bar must clamp, not raise."""
    rounds = [{"name": "base", "rap_format": 0.0, "rap_format_ci": [8.673617379884035e-19, 0.0126]}]
    assert report.plot_metrics_by_round(rounds)[:4] == b"\x89PNG"
