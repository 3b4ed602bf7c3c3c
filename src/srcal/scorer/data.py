"""Stage ``rscorer-data``: labelled response pairs for training and evaluating R-Scorer.

The paper trains its judge on pairs of rationale-answer responses labelled by a large LLM; it publishes
neither the pairs nor the labeller prompt (DESIGN §1). Ours:

* **Responses** per sample: two teacher RAPs in different phrasing (``oracle.teacher_rap``) and controlled
  corruptions of the first (``oracle.CORRUPTIONS``: a wrong claim, a missing step, an answer that does not
  follow, a hallucinated claim, a consistent misreading), some corrupted twice so error counts vary; plus,
  when the stage is given a ``candidates`` input (stage-2 search on the RFT model), the model's own
  candidates — the distribution the judge meets at scoring time.
* **Pairs** are drawn within a sample (teacher vs corruption, corruption vs corruption, teacher vs
  teacher) and labelled **once** by the labeller in a random order; the swapped row gets the swapped label
  (swap augmentation, JudgeLM; PairRM's random left/right). Ties stay ``C``.
* **Labeller**: the shapes-world ``oracle_judge`` with the recipe's noise / position bias / tie margin
  (a stand-in for an LLM labeller's mistakes), or an OpenAI-compatible endpoint (``labeller.kind:
  openai``; a LLaMA-3.1-70B-class model for real data) whose verdict probabilities are read from one
  token (``srcal.client.OpenAIClient.verdict``). Pairs the endpoint cannot label are dropped and counted.
* **Held-out** pairs come from samples (scenes) that no training pair uses.

Rows of ``train.jsonl`` / ``heldout.jsonl`` (both orders, consecutive, same ``pair_id``)::

    {"pair_id", "order": "ab"|"ba", "sample_id", "source", "response_a", "response_b", "label": "A"|"B"|"C",
     "clean_label", "errors_a", "errors_b", "quality_a", "quality_b", "aux_a", "aux_b"}

``aux_*`` are per-response targets the labeller gives besides the verdict (shapes world: the truth of each
claim in order, whether the answer is right, the error count, the number of true claims); the tiny judge
trains on them (notes/environment.md §10), the TRL path ignores them. ``samples.jsonl`` holds every sample
a pair refers to (with its scene), so training can build the judge's input without the ``data`` artifact.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

from srcal.jsonl import read_jsonl, write_jsonl

log = logging.getLogger("srcal.scorer.data")

LABELLER_PROMPT = (
    "You compare two answers to a question about an image, given a description of the image.\n"
    "Description: {description}\nQuestion: {question}\n\nResponse A:\n{response_a}\n\nResponse B:\n{response_b}\n\n"
    "Which response has the more accurate, complete rationale whose answer follows from it? "
    "Reply with one letter: A, B, or C if they are equally good."
)


# ---------------------------------------------------------------------------------------------------
# Responses and pairs
# ---------------------------------------------------------------------------------------------------
def response_pool(sample: dict, rng: random.Random, prefix: str, double_corrupt: float) -> list[tuple[str, str]]:
    """(source, text) responses for one sample: 2 teacher RAPs + one corruption of each kind, some twice."""
    from srcal.data import oracle

    t1 = oracle.teacher_rap(sample, rng, prefix)
    pool = [("teacher", t1), ("teacher", oracle.teacher_rap(sample, rng, prefix))]
    for kind in oracle.CORRUPTIONS:
        bad = oracle.corrupt_rap(sample, t1, kind, rng, prefix)
        name = kind
        if rng.random() < double_corrupt:
            second = rng.choice([k for k in oracle.CORRUPTIONS if k != kind])
            bad = oracle.corrupt_rap(sample, bad, second, rng, prefix)
            name = f"{kind}+{second}"
        pool.append((name, bad))
    return pool


def draw_pairs(pool: list[tuple[str, str]], n: int, rng: random.Random) -> list[tuple[int, int]]:
    """``n`` distinct unordered pairs of different texts from the pool, mixing pair kinds."""
    idx = [(i, j) for i in range(len(pool)) for j in range(i + 1, len(pool)) if pool[i][1] != pool[j][1]]
    rng.shuffle(idx)
    return idx[:n]


def response_aux(sample: dict, text: str, prefix: str) -> dict[str, Any]:
    """Per-response targets from the shapes-world oracle (see module docstring)."""
    from srcal.data import oracle

    a = oracle.assess(sample, text, prefix)
    return {"claims_true": [bool(c.true) for c in a.claims], "correct": bool(a.correct),
            "errors": int(a.errors), "n_true": int(a.n_true), "consistent": a.consistent}


def swap_label(label: str) -> str:
    return {"A": "B", "B": "A"}.get(label, label)


def pair_rows(pair_id: str, sample: dict, src: tuple[str, str], a: str, b: str, verdict: dict,
              aux_a: dict | None, aux_b: dict | None) -> list[dict]:
    """The labelled pair in the order it was labelled, then swapped (label and per-response fields)."""
    base = {"pair_id": pair_id, "sample_id": sample["id"]}
    row = {**base, "order": "ab", "source": f"{src[0]}|{src[1]}", "response_a": a, "response_b": b,
           "label": verdict["label"], "clean_label": verdict.get("clean_label", verdict["label"]),
           "errors_a": verdict.get("errors_a"), "errors_b": verdict.get("errors_b"),
           "quality_a": verdict.get("quality_a"), "quality_b": verdict.get("quality_b"),
           "aux_a": aux_a, "aux_b": aux_b}
    swapped = {**base, "order": "ba", "source": f"{src[1]}|{src[0]}", "response_a": b, "response_b": a,
               "label": swap_label(row["label"]), "clean_label": swap_label(row["clean_label"]),
               "errors_a": row["errors_b"], "errors_b": row["errors_a"],
               "quality_a": row["quality_b"], "quality_b": row["quality_a"], "aux_a": aux_b, "aux_b": aux_a}
    return [row, swapped]


# ---------------------------------------------------------------------------------------------------
# Labellers
# ---------------------------------------------------------------------------------------------------
def oracle_labeller(recipe):
    """The shapes-world oracle judge with the recipe's noise, position bias and tie margin."""
    from srcal.data import oracle

    lab = recipe.labeller

    def label(sample: dict, a: str, b: str, rng: random.Random) -> dict:
        v = oracle.oracle_judge(sample, a, b, noise=lab.noise, position_bias=lab.position_bias,
                                tie_margin=lab.tie_margin, rng=rng, prefix=recipe.rap_answer_prefix)
        return {"label": v.label, "clean_label": v.clean_label, "errors_a": v.errors_a, "errors_b": v.errors_b,
                "quality_a": v.quality_a, "quality_b": v.quality_b}

    return label


def openai_labeller(recipe):
    """An OpenAI-compatible LLM labeller: chat prompt, verdict read from one token's log-probs (A/B/C)."""
    from srcal.client import OpenAIClient

    lab = recipe.labeller
    client = OpenAIClient(lab.url, lab.model, concurrency=lab.concurrency, timeout_s=lab.timeout_s,
                          retries=lab.retries)

    def label(sample: dict, a: str, b: str, rng: random.Random) -> dict:
        text = lab.prompt.format(description=sample.get("description", ""), question=sample["question"],
                                 response_a=a, response_b=b)
        probs = client.verdict(["A", "B", "C"], messages=[{"role": "user", "content": text}])
        best = max(probs, key=probs.get)
        return {"label": best, "clean_label": best, "probs": probs}

    label.client = client  # type: ignore[attr-defined]
    return label


# ---------------------------------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------------------------------
def judge_samples(recipe, n: int, split: str) -> list[dict]:
    """Fresh shapes-world samples for the judge's pairs, 2:1:1 over categories, disjoint by id prefix
    (and seed stream) from the data splits and between ``train`` and ``heldout``."""
    from srcal.data import shapes as W

    ratio = recipe.data.category_ratio
    total = sum(ratio)
    counts = [round(n * r / total) for r in ratio]
    counts[0] += n - sum(counts)
    out = []
    for cat, k in zip(("perception", "chart", "math"), counts):
        rng = random.Random(f"{recipe.seed}:rscorer:{split}:{cat}")
        out += [W.make_sample(recipe.data.shapes, cat, rng, f"rscorer-{split}-{cat}-{i:05d}") for i in range(k)]
    random.Random(f"{recipe.seed}:rscorer:{split}:order").shuffle(out)
    return out


def model_candidates(inputs: dict[str, Path]) -> dict[str, list[str]]:
    """Candidate texts per sample id from an optional ``candidates`` input (a search stage output)."""
    if "candidates" not in inputs:
        return {}
    by: dict[str, list[str]] = {}
    for row in read_jsonl(Path(inputs["candidates"]) / "candidates.jsonl", missing_ok=True):
        by.setdefault(str(row["sample_id"]), []).append(str(row.get("text", "")))
    return by


# ---------------------------------------------------------------------------------------------------
# Stage
# ---------------------------------------------------------------------------------------------------
def build_split(recipe, samples: list[dict], n_pairs: int, split: str, labeller, rng: random.Random,
                extra: dict[str, list[str]] | None = None) -> tuple[list[dict], list[dict], dict]:
    """Pairs (both orders) for one split; returns (rows, used samples, counts)."""
    rs = recipe.rscorer
    prefix = recipe.rap_answer_prefix
    rows: list[dict] = []
    used: list[dict] = []
    counts = {"pairs": 0, "label_failed": 0, "labels": {"A": 0, "B": 0, "C": 0}}
    oracle_aux = recipe.data.world == "shapes"
    for sample in samples:
        if counts["pairs"] >= n_pairs:
            break
        pool = response_pool(sample, rng, prefix, rs.double_corrupt) if oracle_aux else []
        pool += [("model", t) for t in (extra or {}).get(sample["id"], [])]
        picks = draw_pairs(pool, min(rs.pairs_per_sample, n_pairs - counts["pairs"]), rng)
        if not picks:
            continue
        used.append(sample)
        for i, j in picks:
            if rng.random() < 0.5:
                i, j = j, i
            (sa, a), (sb, b) = pool[i], pool[j]
            try:
                verdict = labeller(sample, a, b, rng)
            except Exception as e:  # noqa: BLE001 — a pair the labeller cannot label is dropped, counted
                counts["label_failed"] += 1
                log.warning("labeller failed on %s: %s", sample["id"], e)
                continue
            aux_a = response_aux(sample, a, prefix) if oracle_aux else None
            aux_b = response_aux(sample, b, prefix) if oracle_aux else None
            pid = f"{split}-{counts['pairs']:06d}"
            rows += pair_rows(pid, sample, (sa, sb), a, b, verdict, aux_a, aux_b)
            counts["pairs"] += 1
            counts["labels"][verdict["label"]] = counts["labels"].get(verdict["label"], 0) + 1
    return rows, used, counts


def run_rscorer_data(recipe, inputs: dict[str, Path], out: Path, **_: Any) -> dict:
    """Stage ``rscorer-data``: write ``train.jsonl``, ``heldout.jsonl``, ``samples.jsonl``.

    Inputs: ``data`` (the splits; real data reads its RFT pool from it), optional ``candidates`` (search
    output on the RFT model, mixed into the pools). ``base``/``rft`` are accepted for the pipeline's wiring.
    """
    t0 = time.time()
    rs = recipe.rscorer
    out.mkdir(parents=True, exist_ok=True)
    labeller = oracle_labeller(recipe) if recipe.labeller.kind == "oracle" else openai_labeller(recipe)
    if recipe.labeller.kind == "oracle" and recipe.data.world != "shapes":
        raise ValueError("labeller.kind 'oracle' needs the shapes world (data.world: shapes); "
                         "set labeller.kind: openai with labeller.url for real data")
    extra = model_candidates(inputs)
    per = max(1, rs.pairs_per_sample)
    if recipe.data.world == "shapes":
        train_samples = judge_samples(recipe, rs.n_train_pairs // per + 1, "train")
        held_samples = judge_samples(recipe, rs.n_heldout_pairs // per + 1, "heldout")
        if extra and "data" in inputs:  # the model's own candidates: their samples join the training pool
            rows = (read_jsonl(Path(inputs["data"]) / "calib.jsonl", missing_ok=True)
                    + read_jsonl(Path(inputs["data"]) / "rft.jsonl", missing_ok=True))
            train_samples = [r for r in rows if r["id"] in extra] + train_samples
    else:
        if not extra:
            raise ValueError("rscorer-data on real data needs a 'candidates' input (search on the RFT model)")
        rows = [r for r in read_jsonl(Path(inputs["data"]) / "rft.jsonl", missing_ok=True) if r["id"] in extra]
        random.Random(f"{recipe.seed}:rscorer:split").shuffle(rows)
        n_held = max(1, len(rows) * rs.n_heldout_pairs // max(1, rs.n_train_pairs + rs.n_heldout_pairs))
        held_samples, train_samples = rows[:n_held], rows[n_held:]
    rng = random.Random(f"{recipe.seed}:rscorer:pairs")
    train, used_t, c_train = build_split(recipe, train_samples, rs.n_train_pairs, "train", labeller, rng, extra)
    held, used_h, c_held = build_split(recipe, held_samples, rs.n_heldout_pairs, "heldout", labeller,
                                       random.Random(f"{recipe.seed}:rscorer:heldout"), extra)
    if not train or not held:
        raise RuntimeError(f"rscorer-data produced {len(train)} training and {len(held)} held-out rows; "
                           "check the labeller (summary counts) and rscorer.n_*_pairs")
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "heldout.jsonl", held)
    keep = ("id", "question", "answer", "category", "source", "scene", "description")
    write_jsonl(out / "samples.jsonl", [{k: s[k] for k in keep if k in s} for s in used_t + used_h])
    return {"counts": {"train_pairs": c_train["pairs"], "heldout_pairs": c_held["pairs"],
                       "train_rows": len(train), "heldout_rows": len(held),
                       "samples": len(used_t) + len(used_h), "model_candidates": sum(map(len, extra.values()))},
            "labels_train": c_train["labels"], "labels_heldout": c_held["labels"],
            "label_failed": c_train["label_failed"] + c_held["label_failed"],
            "timings_s": {"build": round(time.time() - t0, 2)}}
