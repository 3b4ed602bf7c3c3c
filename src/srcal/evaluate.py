"""Evaluation harness: answer accuracy, RAP format rate, rationale factuality and consistency, with 95% CIs.

What is measured (``metrics.json``, docs/architecture.md), on a held-out split, with **no format prompt** (the prompt
is the plain question, ``srcal.models.loading.plain_question_messages``), greedy decoding:

* ``accuracy`` — the response's answer is right, by the project's one scoring rule (:mod:`srcal.answers`:
  the ``Answer:`` line, else a one-line response; option letter or text for multiple choice; ChartQA's
  relaxed accuracy for numbers; normalised exact match otherwise).
* ``rap_format`` — share of responses in clean RAP form (``srcal.data.rap.parse_rap(...).ok``).
* ``rationale_factuality`` — shapes world only: per response, the share of checkable claims that are
  true (``oracle.assess``), averaged over responses that make at least one claim (``n_factuality``).
* ``consistency`` — shapes world only: share of responses whose answer follows from their own rationale,
  over responses where the oracle can tell (``n_consistency``).

Rates get Wilson score intervals; the factuality mean gets a Student-t interval (``*_ci``: [low, high]).
Per-category entries carry the same keys.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from srcal.answers import response_answer, score_answer

log = logging.getLogger("srcal.evaluate")

Z95 = 1.959963984540054


# ---------------------------------------------------------------------------------------- intervals


def wilson_ci(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for k successes in n trials (good at rates near 0 or 1, unlike Wald)."""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _t_quantile_975(df: int) -> float:
    """Two-sided 95% Student-t quantile; a small table, then the normal value (error < 0.3% past 30)."""
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
             10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}
    if df in table:
        return table[df]
    if df < 30:
        lower = max(k for k in table if k < df)
        return table[lower]  # conservative: the quantile of the next smaller tabulated df
    return Z95 + 2.4 / df  # ≈ 2.021 at 40, 2.000 at 60, → 1.96


def mean_ci(values: list[float]) -> tuple[float | None, tuple[float, float] | None]:
    """Mean and 95% Student-t interval (clipped to [0, 1]: the values are rates)."""
    n = len(values)
    if n == 0:
        return None, None
    m = sum(values) / n
    if n == 1:
        return m, None
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    half = _t_quantile_975(n - 1) * math.sqrt(var / n)
    return m, (max(0.0, m - half), min(1.0, m + half))


# ---------------------------------------------------------------------------------------- metrics


def assess_response(sample: dict, text: str, prefix: str = "Answer:") -> dict[str, Any]:
    """One prediction row: the answer, correctness, format, and the oracle's rationale checks (shapes)."""
    from srcal.data.rap import parse_rap

    answer = response_answer(text, prefix)
    row: dict[str, Any] = {"id": sample["id"], "category": sample.get("category"), "source": sample.get("source"),
                           "question": sample["question"], "gold": sample["answer"], "response": text,
                           "answer": answer, "correct": score_answer(sample, answer),
                           "rap_format": parse_rap(text, prefix).ok, "factuality": None, "consistent": None,
                           "n_claims": None}
    from srcal.world import oracle_assessment

    a = oracle_assessment(sample, text, prefix)
    if a is not None:
        row.update(factuality=a.factuality, consistent=a.consistent, n_claims=a.n_claims, n_true=a.n_true)
    return row


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy, format rate, factuality and consistency with 95% CIs over prediction rows."""
    n = len(rows)
    k_acc = sum(bool(r["correct"]) for r in rows)
    k_fmt = sum(bool(r["rap_format"]) for r in rows)
    facts = [float(r["factuality"]) for r in rows if r.get("factuality") is not None]
    cons = [bool(r["consistent"]) for r in rows if r.get("consistent") is not None]
    fact_mean, fact_ci = mean_ci(facts)
    n_claims = sum(int(r.get("n_claims") or 0) for r in rows)
    n_true = sum(int(r.get("n_true") or 0) for r in rows)
    return {
        "n": n,
        "accuracy": k_acc / n if n else None,
        "accuracy_ci": wilson_ci(k_acc, n),
        "rap_format": k_fmt / n if n else None,
        "rap_format_ci": wilson_ci(k_fmt, n),
        "rationale_factuality": fact_mean,
        "rationale_factuality_ci": fact_ci,
        "n_factuality": len(facts),
        "claims_true_share": n_true / n_claims if n_claims else None,  # micro average over all claims
        "consistency": sum(cons) / len(cons) if cons else None,
        "consistency_ci": wilson_ci(sum(cons), len(cons)),
        "n_consistency": len(cons),
    }


def round_entry(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``metrics.json`` round entry: overall metrics plus ``per_category``."""
    cats = sorted({r.get("category") or "unknown" for r in rows})
    entry = {"name": name, **summarize(rows)}
    entry["per_category"] = {c: summarize([r for r in rows if (r.get("category") or "unknown") == c]) for c in cats}
    return entry


# ------------------------------------------------------------------------------------- generation


def fit_to_context(model, processor, samples: list[dict], images: list, max_new_tokens: int
                   ) -> tuple[list[dict], list, list[dict]]:
    """(samples, images, rejected): rows whose encoded prompt (image tokens included) plus ``max_new_tokens``
    exceed the model's context are rejected with the reason, one row encoded at a time (each is already
    within ``data.max_prompt_chars``), so no batch is ever built around an oversized row."""
    from srcal.data.schema import context_length, prompt_tokens_problem, rejected_entry
    from srcal.models.loading import plain_question_messages

    context = context_length(getattr(model, "config", None), processor.tokenizer)
    if context is None:
        return samples, images, []
    kept_s, kept_i, rejected = [], [], []
    for s, im in zip(samples, images):
        prompt = processor.apply_chat_template(plain_question_messages(s["question"], s.get("choices")),
                                               add_generation_prompt=True)
        n = int(processor(images=[im], text=[prompt], return_tensors="pt")["input_ids"].shape[1])
        problem = prompt_tokens_problem(n, context, reserve=max_new_tokens)
        if problem:
            rejected.append(rejected_entry("<prompt>", None, s.get("id"), "question", problem))
        else:
            kept_s.append(s)
            kept_i.append(im)
    return kept_s, kept_i, rejected


def generate_responses(model, processor, samples: list[dict], images: list, *, batch_size: int,
                       max_new_tokens: int, on_batch=None) -> list[str]:
    """Greedy responses to the plain question (no format prompt), batched with left padding.

    ``images`` are PIL images aligned with ``samples``. Special tokens are stripped from the text.
    """
    import torch

    from srcal.models.capabilities import per_prompt_images
    from srcal.models.loading import plain_question_messages

    tok = processor.tokenizer
    tok.padding_side = "left"
    out: list[str] = []
    device = next(model.parameters()).device
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        prompts = [processor.apply_chat_template(plain_question_messages(s["question"], s.get("choices")),
                                                 add_generation_prompt=True) for s in chunk]
        enc = processor(images=per_prompt_images(model, images[start:start + batch_size]), text=prompts,
                        return_tensors="pt", padding=True).to(device)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = gen[:, enc["input_ids"].shape[1]:]
        out += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
        if on_batch is not None:
            on_batch(len(out))
    return out


def load_split(data_dir: Path, split: str, max_rejected_share: float,
               max_prompt_chars: int = 0) -> tuple[list[dict], list, list[dict]]:
    """Rows of ``<split>.jsonl`` with their images; unreadable rows and prompts over ``max_prompt_chars``
    are quarantined (returned as rejected) before any image is opened."""
    from PIL import Image

    from srcal.data.schema import read_jsonl

    path = data_dir / f"{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no '{split}' split in the data artifact (run `srcal data build`)")
    rows, rejected = read_jsonl(path, images_root=data_dir, max_rejected_share=max_rejected_share,
                                max_prompt_chars=max_prompt_chars)
    images = []
    for r in rows:
        with Image.open(data_dir / r["image"]) as im:
            images.append(im.convert("RGB"))
    return rows, images, rejected


def evaluate_model(model, processor, samples: list[dict], images: list, *, batch_size: int,
                   max_new_tokens: int, prefix: str = "Answer:") -> list[dict[str, Any]]:
    """Generate and assess: one prediction row per sample."""
    texts = generate_responses(model, processor, samples, images, batch_size=batch_size,
                               max_new_tokens=max_new_tokens)
    return [assess_response(s, t, prefix) for s, t in zip(samples, texts)]


def run_eval(recipe, inputs: dict[str, Path], out: Path, round: str = "eval", split: str = "eval",
             limit: str | int = 0, **options) -> dict:
    """Stage ``eval``: evaluate ``inputs["model"]`` (a base or model artifact over ``inputs["base"]``) on
    ``inputs["data"]/<split>.jsonl``; writes ``metrics.json`` (one round entry) and ``predictions.jsonl``."""
    import torch

    from srcal.data.schema import write_jsonl
    from srcal.models.loading import load_model_any, pick_device

    torch.manual_seed(recipe.seed)
    t0 = time.time()
    samples, images, rejected = load_split(Path(inputs["data"]), split, recipe.data.max_rejected_share,
                                           recipe.data.max_prompt_chars)
    if int(limit):
        samples, images = samples[: int(limit)], images[: int(limit)]
    base = inputs.get("base", inputs["model"])
    model, proc = load_model_any(inputs["model"], base, dtype=recipe.model.dtype,
                                 device=pick_device(recipe.device))
    samples, images, too_long = fit_to_context(model, proc, samples, images, recipe.eval.max_new_tokens)
    rejected += too_long
    t_load = time.time()
    rows = evaluate_model(model, proc, samples, images, batch_size=recipe.eval.batch_size,
                          max_new_tokens=recipe.eval.max_new_tokens, prefix=recipe.rap_answer_prefix)
    t_gen = time.time()
    entry = round_entry(round, rows)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "predictions.jsonl", rows)
    if rejected:
        write_jsonl(out / "rejected.jsonl", rejected)
    metrics = {"recipe": recipe.name, "rounds": [entry]}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("eval %s: n=%d accuracy=%.3f rap_format=%.3f factuality=%s", round, entry["n"],
             entry["accuracy"] or 0.0, entry["rap_format"] or 0.0, entry["rationale_factuality"])
    return {"round": round, "split": split, "counts": {"in": len(samples) + len(rejected), "evaluated": len(rows),
                                                       "rejected": len(rejected),
                                                       "prompt_too_long": sum("prompt of" in r["reason"] for r in rejected)},
            "metrics": {k: entry[k] for k in ("n", "accuracy", "rap_format", "rationale_factuality", "consistency")},
            "timings_s": {"load": round_s(t_load - t0), "generate": round_s(t_gen - t_load)}}


def round_s(x: float) -> float:
    return round(x, 3)


def merge_metrics(run_metrics: Path, entry_metrics: Path) -> dict:
    """Append (or replace by name) the round entries of ``entry_metrics`` into the run's ``metrics.json``."""
    new = json.loads(Path(entry_metrics).read_text())
    cur = json.loads(Path(run_metrics).read_text()) if Path(run_metrics).exists() else {"recipe": new.get("recipe")}
    names = {e["name"] for e in new["rounds"]}
    cur["rounds"] = [e for e in cur.get("rounds", []) if e["name"] not in names] + new["rounds"]
    Path(run_metrics).write_text(json.dumps(cur, indent=2) + "\n")
    return cur
