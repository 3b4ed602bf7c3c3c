"""srcal.evaluate: intervals (hand-computed), benchmark scoring rules, metrics, and the eval stage end to end."""

from __future__ import annotations

import json
import math

import pytest

from srcal import answers
from srcal import evaluate as ev


def test_wilson_interval_matches_hand_computation():
    """k=8, n=10, z=1.96: p=0.8; denom = 1 + 3.8416/10 = 1.38416;
    centre = (0.8 + 3.8416/20) / 1.38416 = 0.99208/1.38416 = 0.71674;
    half = 1.96*sqrt(0.016 + 3.8416/400)/1.38416 = 1.96*0.16004/1.38416 = 0.22662 → [0.4901, 0.9434]."""
    lo, hi = ev.wilson_ci(8, 10)
    assert lo == pytest.approx(0.4901, abs=1e-3) and hi == pytest.approx(0.9434, abs=1e-3)
    lo, hi = ev.wilson_ci(0, 50)  # a zero rate still gets a non-degenerate upper bound: z²/(n+z²) = 0.0714
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(3.8415 / (50 + 3.8415), abs=1e-3)
    assert ev.wilson_ci(0, 0) is None


def test_mean_ci_is_student_t():
    """values 0, 0.5, 1: mean 0.5, sd 0.5, se 0.5/sqrt(3) = 0.288675; t(2) = 4.303 → half 1.2422 → clipped
    to [0, 1]. values [0.4]*5 + [0.6]*5: mean 0.5, sd 0.10541, se 0.033333, t(9)=2.262 → ±0.0754."""
    m, ci = ev.mean_ci([0.0, 0.5, 1.0])
    assert m == 0.5 and ci == (0.0, 1.0)
    m, (_lo, hi) = ev.mean_ci([0.4] * 5 + [0.6] * 5)
    assert m == pytest.approx(0.5) and hi - m == pytest.approx(2.262 * math.sqrt(0.0111111 / 10), abs=1e-4)
    assert ev.mean_ci([]) == (None, None) and ev.mean_ci([0.3]) == (0.3, None)


@pytest.mark.parametrize("pred,target,ok", [
    ("10.4", "10", True), ("10.6", "10", False), ("5%", "0.05", True), ("1,000", "1000", True),
    ("0", "0", True), ("0.1", "0", False), ("Yes", "yes", True), ("yes ", "Yes", True),
])
def test_relaxed_match_chartqa_rule(pred, target, ok):
    assert answers.relaxed_match(pred, target) is ok


def test_score_answer_rules():
    mc = {"id": "1", "question": "Which?", "answer": "dog", "choices": ["cat", "dog", "cow"], "source": "mmstar"}
    assert answers.score_answer(mc, "B") and answers.score_answer(mc, "(B)") and answers.score_answer(mc, "B. dog")
    assert answers.score_answer(mc, "dog") and not answers.score_answer(mc, "A") and not answers.score_answer(mc, "D")
    letter_gold = {**mc, "answer": "C", "choices": ["x", "y", "z"]}
    assert answers.score_answer(letter_gold, "C") and not answers.score_answer(letter_gold, "B")
    chart = {"id": "2", "question": "Value?", "answer": "40", "source": "chartqa"}
    assert answers.score_answer(chart, "41.5") and not answers.score_answer(chart, "43")
    shapes_row = {"id": "3", "question": "How many?", "answer": "2", "source": "shapes", "scene": {}}
    assert answers.score_answer(shapes_row, "two") and not answers.score_answer(shapes_row, "2.05")
    assert not answers.score_answer(shapes_row, None) and not answers.score_answer(shapes_row, "  ")


def test_response_answer_short_and_rap():
    assert answers.response_answer("red") == "red"
    assert answers.response_answer("red.") == "red"
    assert answers.response_answer("The shape is red. So the answer is red.\nAnswer: red") == "red"
    assert answers.response_answer("The shape is red.\nIt is round.") is None  # rationale, no answer line


def _shapes_samples(n=40):
    from srcal.config import ShapesWorldConfig
    from srcal.world import shapes

    out = []
    for cat in ("perception", "chart", "math"):
        out += [s for s, _ in shapes.generate_samples(ShapesWorldConfig(), n, cat, 1, f"t-{cat}")]
    return out


def test_metrics_on_oracle_and_short_answers():
    """Oracle RAPs: accuracy 1, format 1, factuality 1, consistency 1. Bare short answers: accuracy 1,
    format 0, no factuality. Oracle RAP with a wrong answer line: accuracy 0, inconsistent."""
    import random

    from srcal.world import teacher

    samples = _shapes_samples()
    rng = random.Random(0)
    raps = [ev.assess_response(s, teacher.teacher_rap(s, rng)) for s in samples]
    e = ev.round_entry("rft", raps)
    assert e["n"] == len(samples) and e["accuracy"] == 1.0 and e["rap_format"] == 1.0
    assert e["rationale_factuality"] == 1.0 and e["consistency"] == 1.0
    assert set(e["per_category"]) == {"perception", "chart", "math"}
    assert e["per_category"]["chart"]["n"] == 40
    short = ev.round_entry("base", [ev.assess_response(s, s["answer"]) for s in samples])
    assert short["accuracy"] == 1.0 and short["rap_format"] == 0.0 and short["rationale_factuality"] is None
    assert short["rap_format_ci"][1] < 0.05
    bad = []
    for s in samples:
        rap = teacher.teacher_rap(s, rng)
        wrong = "999"
        bad.append(ev.assess_response(s, rap.rsplit("\n", 1)[0] + f"\nAnswer: {wrong}"))
    b = ev.round_entry("bad", bad)
    assert b["accuracy"] == 0.0 and b["consistency"] == 0.0 and b["rap_format"] == 1.0


def test_merge_metrics_replaces_round_by_name(tmp_path):
    run = tmp_path / "metrics.json"
    for name, acc in (("base", 0.5), ("rft", 0.6), ("rft", 0.7)):
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps({"recipe": "tiny", "rounds": [{"name": name, "accuracy": acc}]}))
        ev.merge_metrics(run, f)
    got = json.loads(run.read_text())
    assert got["recipe"] == "tiny" and [(r["name"], r["accuracy"]) for r in got["rounds"]] == [("base", 0.5), ("rft", 0.7)]


def test_eval_cli_on_base_and_model_artifact(tmp_path):
    """`srcal eval` end to end on an untrained tiny LLaVA and on a model artifact (random LoRA) over it:
    metrics.json has one round entry with the keys docs/architecture.md lists, predictions.jsonl one row per sample."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from peft import get_peft_model

    from srcal.cli import main
    from srcal.config import LoraConfig, load_recipe
    from srcal.models.loading import load_lvlm, lora_config, new_model_artifact
    from srcal.rft.base import build_tiny_from_recipe
    from srcal.stages import execute

    sets = ["model.tiny.vision_hidden=32", "model.tiny.text_hidden=64", "model.tiny.text_heads=1",
            "model.tiny.vocab_size=400", "model.tiny.corpus_samples=100", "data.rft_size=4", "data.calib_size=4",
            "data.eval_size=12", "data.base_train_size=0", "eval.max_new_tokens=6", "eval.batch_size=5"]
    recipe = load_recipe("tiny", sets)
    execute("data", recipe, {}, str(tmp_path / "data"))
    base = build_tiny_from_recipe(recipe, tmp_path / "base")
    from srcal.run import store

    store.publish(base, str(tmp_path / "base_pub"), marker={"stage": "base"})
    args = [a for s in sets for a in ("--set", s)]
    assert main(["eval", *args, "--model", str(tmp_path / "base_pub"), "--data", str(tmp_path / "data"),
                 "--out", str(tmp_path / "ev_base"), "--round", "base"]) == 0
    m = json.loads((tmp_path / "ev_base" / "metrics.json").read_text())
    entry = m["rounds"][0]
    assert m["recipe"] == "tiny" and entry["name"] == "base" and entry["n"] == 12
    for key in ("accuracy", "rationale_factuality", "consistency", "rap_format", "accuracy_ci", "per_category"):
        assert key in entry
    assert len((tmp_path / "ev_base" / "predictions.jsonl").read_text().splitlines()) == 12

    model, _ = load_lvlm(tmp_path / "base_pub")
    art = tmp_path / "rft"
    new_model_artifact(art, None, "rft", family="llava")
    cfg = lora_config(LoraConfig(r=2, alpha=4))
    cfg.init_lora_weights = False
    get_peft_model(model, cfg).save_pretrained(art)
    store.publish(art, str(tmp_path / "rft_pub"), marker={"stage": "rft"})
    assert main(["eval", *args, "--model", str(tmp_path / "rft_pub"), "--base", str(tmp_path / "base_pub"),
                 "--data", str(tmp_path / "data"), "--out", str(tmp_path / "ev_rft"), "--round", "rft",
                 "--limit", "5"]) == 0
    entry = json.loads((tmp_path / "ev_rft" / "metrics.json").read_text())["rounds"][0]
    assert entry["name"] == "rft" and entry["n"] == 5
    preds = [json.loads(x) for x in (tmp_path / "ev_base" / "predictions.jsonl").read_text().splitlines()]
    preds_rft = [json.loads(x) for x in (tmp_path / "ev_rft" / "predictions.jsonl").read_text().splitlines()]
    assert [p["response"] for p in preds[:5]] != [p["response"] for p in preds_rft]  # the adapter is applied
