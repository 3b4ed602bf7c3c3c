"""report: metrics.json keys (docs/architecture.md), the paired comparison, and a self-contained HTML page."""

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


def test_report_shows_the_judge_on_the_policys_candidates_and_against_the_oracle(run_inputs, tmp_path):
    """policy_agreement comes from the judge's held-out metrics, the oracle agreement from round 1's curate
    summary; both land in metrics.json → rscorer and in the report's judge line and curation table."""
    (run_inputs["judge"] / "heldout_metrics.json").write_text(json.dumps(
        {"heldout_agreement": 0.85, "heldout_pairs": 300, "policy_agreement": 0.71, "policy_pairs": 40}))
    cur = run_inputs["round1_curate"] / "summary.json"
    cur.write_text(json.dumps({**json.loads(cur.read_text()), "judge": "rscorer",
                               "judge_vs_oracle": {"agreement": 0.6, "readings": 120},
                               "oracle": {"pairs": 7, "chosen_factuality": 0.35, "rejected_factuality": 0.18}}))
    out = tmp_path / "report"
    report.run_report(load_recipe("tiny", ["rounds=1"]), run_inputs, out)
    rs = json.loads((out / "metrics.json").read_text())["rscorer"]
    assert (rs["policy_agreement"], rs["policy_pairs"]) == (0.71, 40)
    assert (rs["oracle_agreement_round1"], rs["oracle_readings_round1"]) == (0.6, 120)
    md = (out / "report.md").read_text()
    assert "policy's own candidates (model vs model, both orders, non-tie): 0.710 on 40 pairs" in md
    assert "round 1's scored candidates: 0.600 of 120" in md
    assert "| 0.350 / 0.180 | 0.600 (120) |" in md


def _run_dir(root, name, rounds: dict, rft_fact=(0.5, 0.5, 0.5, 0.5), rft_correct=(1, 1, 0, 0), judge="rscorer"):
    """A finished run directory as far as `srcal compare` reads it: eval/<model>/predictions.jsonl for rft
    and each round, round<k>/curate and round1/score summaries."""
    run = root / name
    models = {"rft": (rft_correct, rft_fact), **rounds}
    for model, (correct, fact) in models.items():
        d = run / "eval" / model
        d.mkdir(parents=True)
        (d / "predictions.jsonl").write_text("".join(json.dumps(
            {"id": f"e{i}", "correct": bool(c), "factuality": f, "consistent": bool(c), "rap_format": True,
             "response": f"{model if model == 'rft' else 'x'}-{i}-{f}"}) + "\n"
            for i, (c, f) in enumerate(zip(correct, fact))))
    for k, model in enumerate(rounds, 1):
        (run / model / "curate").mkdir(parents=True)
        (run / model / "curate" / "summary.json").write_text(json.dumps(
            {"counts": {"kept": 10 * k}, "judge": judge, "aggregation": "weighted"}))
    (run / "round1" / "score").mkdir(parents=True)
    (run / "round1" / "score" / "summary.json").write_text(json.dumps({"mode": "pairwise"}))
    last = list(rounds)[-1]
    (run / last / "align").mkdir(parents=True)
    (run / last / "align" / "_SRCAL_COMPLETE.json").write_text(json.dumps({"hash": f"{name}-{last}"}))
    (run / "metrics.json").write_text("{}")  # `srcal run` writes it last, once every step finished
    return run


def test_compare_runs_hand_computed(tmp_path):
    """Reference A (3 rounds): round3 factuality (.75, 1, .5, .75) vs RFT (.5, .5, .5, .5) → +.25;
    accuracy (1, 1, 1, 0) vs (1, 1, 0, 0) → +.25. Ablation B (1 round, oracle): factuality (.5, .5, .75, .5)
    → +.0625 vs RFT; vs A's round3 per item (−.25, −.5, +.25, −.25) → −.1875; accuracy (1, 1, 0, 0) → 0 vs
    RFT, −.25 vs A. C has another RFT model (same_rft false)."""
    a = _run_dir(tmp_path, "tiny", {"round1": ((1, 0, 0, 0), (0.5,) * 4), "round2": ((1, 1, 0, 0), (0.5,) * 4),
                                    "round3": ((1, 1, 1, 0), (0.75, 1.0, 0.5, 0.75))})
    b = _run_dir(tmp_path, "tiny-oracle", {"round1": ((1, 1, 0, 0), (0.5, 0.5, 0.75, 0.5))}, judge="oracle")
    c = _run_dir(tmp_path, "tiny-other", {"round1": ((1, 1, 0, 0), (0.5,) * 4)}, rft_fact=(0.25,) * 4)
    comp = report.compare_runs([a, b, c])
    ra, rb, rc = comp["runs"]
    assert ra["last"] == "round3" and "vs_reference" not in ra and ra["same_rft"]
    assert ra["vs_rft"]["rationale_factuality"]["diff"] == pytest.approx(0.25)
    assert ra["vs_rft"]["accuracy"]["diff"] == pytest.approx(0.25) and ra["vs_rft"]["accuracy"]["n"] == 4
    lo, hi = ra["vs_rft"]["rationale_factuality"]["ci95"]
    assert 0.0 <= lo <= 0.25 <= hi <= 0.5  # bootstrap means of (.25, .5, 0, .25) lie in [0, .5]
    assert rb["vs_rft"]["rationale_factuality"]["diff"] == pytest.approx(0.0625)
    assert rb["vs_reference"]["rationale_factuality"]["diff"] == pytest.approx(-0.1875)
    assert rb["vs_reference"]["accuracy"]["diff"] == pytest.approx(-0.25)
    assert rb["settings"] == {"rounds": 1, "score_mode": "pairwise", "judge": "oracle", "aggregation": "weighted",
                              "pairs": [10]}
    assert ra["settings"]["pairs"] == [10, 20, 30] and rb["same_rft"] and not rc["same_rft"]
    assert not rb["same_last_model"]
    md = report.comparison_markdown(comp)
    assert "| tiny-oracle | 1 round(s), score pairwise, judge oracle" in md and "+0.250" in md and "-0.188" in md


def test_srcal_compare_cli_writes_the_section_and_refuses_an_unfinished_run(tmp_path, capsys):
    from srcal.cli import main

    a = _run_dir(tmp_path, "tiny", {"round1": ((1, 1, 1, 0), (0.75, 1.0, 0.5, 0.75))})
    b = _run_dir(tmp_path, "tiny-uniform", {"round1": ((1, 1, 0, 0), (0.5,) * 4)})
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "abl")]) == 0
    assert "## Ablations" in capsys.readouterr().out
    saved = json.loads((tmp_path / "abl" / "ablations.json").read_text())
    assert [r["label"] for r in saved["runs"]] == ["tiny", "tiny-uniform"]
    assert (tmp_path / "abl" / "ablations.md").read_text().startswith("## Ablations")
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(a), str(tmp_path / "empty")]) == 2
    assert "no eval/rft" in capsys.readouterr().err


def test_compare_refuses_an_unfinished_ablation_and_flags_a_stale_copy(tmp_path):
    """An ablation that failed after `--from` copied the reference's artifacts in holds the reference's
    evals: without metrics.json it is refused; a finished run whose last model has the reference's content
    hash is flagged (it measured nothing new)."""
    a = _run_dir(tmp_path, "tiny", {"round1": ((1, 1, 1, 0), (0.75, 1.0, 0.5, 0.75))})
    b = _run_dir(tmp_path, "tiny-oracle", {"round1": ((1, 1, 1, 0), (0.75, 1.0, 0.5, 0.75))})
    (b / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match="did not finish"):
        report.compare_runs([a, b])
    (b / "metrics.json").write_text("{}")
    (b / "round1" / "align" / "_SRCAL_COMPLETE.json").write_text(json.dumps({"hash": "tiny-round1"}))
    comp = report.compare_runs([a, b])
    assert comp["runs"][1]["same_last_model"] and "SAME last model" in report.comparison_markdown(comp)
