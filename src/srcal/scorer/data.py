"""Stage ``rscorer-data``: labelled response pairs for training and evaluating R-Scorer.

The paper trains its judge on pairs of rationale-answer responses labelled by a large LLM; it publishes
neither the pairs nor the labeller prompt. Ours:

* **The policy's own candidates** (both worlds): the ``candidates`` input is the RFT policy's search on
  **RFT-split** samples (plan step ``rscorer/search``, at most ``rscorer.policy_samples`` samples;
  ``srcal.graph``). Pairs of two such candidates (``model`` vs ``model``) are what the judge meets in every
  round, so it trains on them and is measured on them. Why the RFT split: it is the largest pool, and it
  is disjoint from calibration (which the rounds curate from) and eval by construction, so no labelled
  pair leaks into curation or evaluation. Candidates whose sample is not in ``rft.jsonl`` are refused.
* **Synthetic responses** (shapes world only, in addition): per fresh scene two teacher RAPs in different
  phrasing (``teacher.teacher_rap``) and controlled corruptions of the first (``teacher.CORRUPTIONS``: a
  wrong claim, a missing step, an answer that does not follow, a hallucinated claim, a consistent
  misreading), some corrupted twice so error counts vary.
* **Pairs** are drawn within a sample and labelled **once** by the labeller in a random order; the swapped
  row gets the swapped label (swap augmentation, JudgeLM; PairRM's random left/right). Ties stay ``C``.
  The training budget (``rscorer.n_train_pairs``) takes the policy samples' pairs first, then synthetic ones.
* **Labeller**: the shapes-world ``oracle_judge`` with the recipe's noise / position bias / tie margin
  (a stand-in for an LLM labeller's mistakes), or an OpenAI-compatible endpoint (``labeller.kind:
  openai``; a LLaMA-3.1-70B-class model for real data) whose verdict probabilities are read from one
  token (``srcal.serve.client.OpenAIClient.verdict``). Pairs the endpoint cannot label are dropped and counted.
* **Held-out** pairs come from samples that no training pair uses: a share of the policy samples (enough
  for all of ``rscorer.n_heldout_pairs`` on real data, half of it on the shapes world, at most half of the
  policy samples) and, on the shapes world, fresh held-out scenes. Its model-vs-model rows are where
  ``rscorer-train`` measures the judge's agreement on the policy's candidates (``policy_agreement``).

Rows of ``train.jsonl`` / ``heldout.jsonl`` (both orders, consecutive, same ``pair_id``)::

    {"pair_id", "order": "ab"|"ba", "sample_id", "source": "<source_a>|<source_b>", "source_a", "source_b",
     "cand_a", "cand_b", "response_a", "response_b", "label": "A"|"B"|"C", "clean_label", "errors_a",
     "errors_b", "quality_a", "quality_b", "aux_a", "aux_b"}

``source_*`` is ``model`` for a policy candidate (``cand_*`` = its candidate id), ``teacher`` or the
corruption kind(s) otherwise (``cand_*`` null). ``clean_label`` is the labeller's label before its noise and
position bias (shapes world: the oracle's quality order; an LLM labeller: its label). ``aux_*`` are
per-response targets the labeller gives besides the verdict (shapes world: the truth of each claim in
order, whether the answer is right, the error count, the number of true claims); the tiny judge trains on
them (dense targets: srcal.scorer.train), the TRL path ignores them. ``samples.jsonl`` holds every sample a pair
refers to (with its scene), so training can build the judge's input without the ``data`` artifact.
"""

from __future__ import annotations

import logging
import math
import random
import time
from pathlib import Path
from typing import Any

from srcal.run.jsonl import read_jsonl, write_jsonl

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
def response_pool(sample: dict, rng: random.Random, prefix: str, double_corrupt: float,
                  describe_first: bool = False) -> list[tuple[str, str]]:
    """(source, text) responses for one sample: 2 teacher RAPs + one corruption of each kind, some twice.
    ``describe_first``: the teacher RAPs in the recipe's describe-first form (``teacher.describe_first``),
    so the judge learns on the rationale form the policy writes."""
    from srcal.world import teacher

    t1 = teacher.teacher_rap(sample, rng, prefix, describe_first=describe_first)
    pool = [("teacher", t1), ("teacher", teacher.teacher_rap(sample, rng, prefix, describe_first=describe_first))]
    for kind in teacher.CORRUPTIONS:
        bad = teacher.corrupt_rap(sample, t1, kind, rng, prefix)
        name = kind
        if rng.random() < double_corrupt:
            second = rng.choice([k for k in teacher.CORRUPTIONS if k != kind])
            bad = teacher.corrupt_rap(sample, bad, second, rng, prefix)
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
    from srcal.world import oracle

    a = oracle.assess(sample, text, prefix)
    return {"claims_true": [bool(c.true) for c in a.claims], "correct": bool(a.correct),
            "errors": int(a.errors), "n_true": int(a.n_true), "consistent": a.consistent}


def swap_label(label: str) -> str:
    return {"A": "B", "B": "A"}.get(label, label)


def pair_rows(pair_id: str, sample: dict, src: tuple[str, str], a: str, b: str, verdict: dict,
              aux_a: dict | None, aux_b: dict | None, cands: tuple[str | None, str | None] = (None, None)
              ) -> list[dict]:
    """The labelled pair in the order it was labelled, then swapped (label and per-response fields)."""
    base = {"pair_id": pair_id, "sample_id": sample["id"]}
    row = {**base, "order": "ab", "source": f"{src[0]}|{src[1]}", "source_a": src[0], "source_b": src[1],
           "cand_a": cands[0], "cand_b": cands[1], "response_a": a, "response_b": b,
           "label": verdict["label"], "clean_label": verdict.get("clean_label", verdict["label"]),
           "errors_a": verdict.get("errors_a"), "errors_b": verdict.get("errors_b"),
           "quality_a": verdict.get("quality_a"), "quality_b": verdict.get("quality_b"),
           "aux_a": aux_a, "aux_b": aux_b}
    swapped = {**base, "order": "ba", "source": f"{src[1]}|{src[0]}", "source_a": src[1], "source_b": src[0],
               "cand_a": cands[1], "cand_b": cands[0], "response_a": b, "response_b": a,
               "label": swap_label(row["label"]), "clean_label": swap_label(row["clean_label"]),
               "errors_a": row["errors_b"], "errors_b": row["errors_a"],
               "quality_a": row["quality_b"], "quality_b": row["quality_a"], "aux_a": aux_b, "aux_b": aux_a}
    return [row, swapped]


# ---------------------------------------------------------------------------------------------------
# Labellers
# ---------------------------------------------------------------------------------------------------
def oracle_labeller(recipe):
    """The shapes-world oracle judge with the recipe's noise, position bias and tie margin."""
    from srcal.world import oracle

    lab = recipe.labeller

    def label(sample: dict, a: str, b: str, rng: random.Random) -> dict:
        v = oracle.oracle_judge(sample, a, b, noise=lab.noise, position_bias=lab.position_bias,
                                tie_margin=lab.tie_margin, rng=rng, prefix=recipe.rap_answer_prefix)
        return {"label": v.label, "clean_label": v.clean_label, "errors_a": v.errors_a, "errors_b": v.errors_b,
                "quality_a": v.quality_a, "quality_b": v.quality_b}

    return label


def openai_labeller(recipe):
    """An OpenAI-compatible LLM labeller: chat prompt, verdict read from one token's log-probs (A/B/C)."""
    from srcal.serve.client import OpenAIClient

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
    from srcal.world import shapes as world

    ratio = recipe.data.category_ratio
    total = sum(ratio)
    counts = [round(n * r / total) for r in ratio]
    counts[0] += n - sum(counts)
    out = []
    for cat, k in zip(("perception", "chart", "math"), counts):
        rng = random.Random(f"{recipe.seed}:rscorer:{split}:{cat}")
        out += [world.make_sample(recipe.data.shapes, cat, rng, f"rscorer-{split}-{cat}-{i:05d}") for i in range(k)]
    random.Random(f"{recipe.seed}:rscorer:{split}:order").shuffle(out)
    return out


class RScorerDataError(ValueError):
    """rscorer-data cannot build its pairs from what it was given; the message names the input and split."""


def model_candidates(inputs: dict[str, Path]) -> dict[str, list[tuple[str, str]]]:
    """(candidate id, text) per sample id from the ``candidates`` input (a search stage output)."""
    if "candidates" not in inputs:
        return {}
    by: dict[str, list[tuple[str, str]]] = {}
    for row in read_jsonl(Path(inputs["candidates"]) / "candidates.jsonl", missing_ok=True):
        sid = str(row["sample_id"])
        by.setdefault(sid, []).append((str(row.get("id") or f"{sid}#c{len(by.get(sid, []))}"),
                                       str(row.get("text", ""))))
    return by


def policy_samples(inputs: dict[str, Path], cands: dict[str, list[tuple[str, str]]]) -> list[dict]:
    """The ``rft.jsonl`` rows that have candidates, in file order; a clear error when candidates exist but
    none of their samples is an RFT-split sample (a search over another split was wired in)."""
    if not cands:
        return []
    if "data" not in inputs:
        raise RScorerDataError("rscorer-data got 'candidates' but no 'data' input: the candidates' samples are "
                               "read from data/rft.jsonl")
    rft = read_jsonl(Path(inputs["data"]) / "rft.jsonl", missing_ok=True)
    rows = [r for r in rft if str(r["id"]) in cands]
    if not rows:
        some = ", ".join(sorted(cands)[:3])
        raise RScorerDataError(
            f"rscorer-data: none of the {len(cands)} samples in the 'candidates' input (e.g. {some}) is in the "
            f"rft split (data/rft.jsonl, {len(rft)} rows); the judge's candidates must come from a search of the "
            "RFT policy with split=rft (plan step rscorer/search), never from calib or eval")
    return rows


def split_policy_samples(recipe, rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(held-out, training) policy samples: disjoint, seeded. Held-out gets enough samples for the model
    share of ``n_heldout_pairs`` (all of it on real data, half on the shapes world, whose synthetic held-out
    scenes fill the rest), but at most half of the samples, so a small pool still trains on its own pairs."""
    if not rows:
        return [], []
    rs = recipe.rscorer
    rows = list(rows)
    random.Random(f"{recipe.seed}:rscorer:split").shuffle(rows)
    share = 1.0 if recipe.data.world != "shapes" else 0.5
    want = math.ceil(share * rs.n_heldout_pairs / max(1, rs.pairs_per_sample))
    n_held = max(1, min(want, len(rows) // 2))
    return rows[:n_held], rows[n_held:]


# ---------------------------------------------------------------------------------------------------
# Stage
# ---------------------------------------------------------------------------------------------------
def build_split(recipe, samples: list[dict], n_pairs: int, split: str, labeller, rng: random.Random,
                extra: dict[str, list[tuple[str, str]]] | None = None) -> tuple[list[dict], list[dict], dict]:
    """Pairs (both orders) for one split; returns (rows, used samples, counts).

    A sample with model candidates (``extra``) pairs them with each other; a synthetic shapes scene (no
    candidates) gets the teacher/corruption pool."""
    rs = recipe.rscorer
    prefix = recipe.rap_answer_prefix
    rows: list[dict] = []
    used: list[dict] = []
    counts = {"pairs": 0, "model_pairs": 0, "label_failed": 0, "labels": {"A": 0, "B": 0, "C": 0}}
    oracle_aux = recipe.data.world == "shapes"
    for sample in samples:
        if counts["pairs"] >= n_pairs:
            break
        model = (extra or {}).get(sample["id"], [])
        if model:
            pool = [("model", t) for _, t in model]
            ids: list[str | None] = [c for c, _ in model]
        else:
            pool = (response_pool(sample, rng, prefix, rs.double_corrupt, recipe.teacher.describe_first)
                    if oracle_aux else [])
            ids = [None] * len(pool)
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
            rows += pair_rows(pid, sample, (sa, sb), a, b, verdict, aux_a, aux_b, (ids[i], ids[j]))
            counts["pairs"] += 1
            counts["model_pairs"] += sa == sb == "model"
            counts["labels"][verdict["label"]] = counts["labels"].get(verdict["label"], 0) + 1
    return rows, used, counts


def _empty_split_error(split: str, samples: list[dict], counts: dict, n_policy: int, n_synthetic: int,
                       recipe) -> str:
    """Why a split has no rows, naming the input and split that came up empty."""
    if not samples:
        where = ("no policy samples (the 'candidates' input, rscorer/search on the rft split, has none for this "
                 "split)" if recipe.data.world != "shapes" else "no samples")
        return (f"rscorer-data: the {split} split got {where}: {n_policy} policy samples in all, {n_synthetic} "
                f"synthetic scenes; raise rscorer.policy_samples (or data.rft_size)")
    if counts["label_failed"]:
        return (f"rscorer-data: the labeller ({recipe.labeller.kind} at {recipe.labeller.url or 'in process'}) "
                f"failed on all {counts['label_failed']} {split} pairs it was given; see the log for why")
    return (f"rscorer-data: the {split} split's {len(samples)} samples gave no pair of two different responses "
            "(every candidate of a sample identical?); check the 'candidates' input")


def run_rscorer_data(recipe, inputs: dict[str, Path], out: Path, **_: Any) -> dict:
    """Stage ``rscorer-data``: write ``train.jsonl``, ``heldout.jsonl``, ``samples.jsonl``.

    Inputs: ``data`` (the splits: the policy samples are read from ``rft.jsonl``), ``candidates`` (the RFT
    policy's search on the rft split; required on real data, optional on the shapes world, which then has
    synthetic pairs only). ``base``/``rft`` are accepted for the pipeline's wiring.
    """
    t0 = time.time()
    rs = recipe.rscorer
    out.mkdir(parents=True, exist_ok=True)
    if recipe.labeller.kind == "oracle" and recipe.data.world != "shapes":
        raise ValueError("labeller.kind 'oracle' needs the shapes world (data.world: shapes); "
                         "set labeller.kind: openai with labeller.url for real data")
    if recipe.data.world != "shapes" and "candidates" not in inputs:
        raise RScorerDataError("rscorer-data on real data needs a 'candidates' input: the RFT policy's search on "
                               "the rft split (plan step rscorer/search)")
    extra = model_candidates(inputs)
    if recipe.data.world != "shapes" and not extra:
        raise RScorerDataError(f"rscorer-data: the 'candidates' input ({inputs['candidates']}) has no candidates; "
                               "did rscorer/search (split=rft) search any sample?")
    labeller = oracle_labeller(recipe) if recipe.labeller.kind == "oracle" else openai_labeller(recipe)
    held_p, train_p = split_policy_samples(recipe, policy_samples(inputs, extra))
    held_samples, train_samples = list(held_p), list(train_p)
    per = max(1, rs.pairs_per_sample)
    n_synth = 0
    if recipe.data.world == "shapes":
        synth_t = judge_samples(recipe, rs.n_train_pairs // per + 1, "train")
        synth_h = judge_samples(recipe, rs.n_heldout_pairs // per + 1, "heldout")
        train_samples += synth_t
        held_samples += synth_h
        n_synth = len(synth_t) + len(synth_h)
    rng = random.Random(f"{recipe.seed}:rscorer:pairs")
    train, used_t, c_train = build_split(recipe, train_samples, rs.n_train_pairs, "train", labeller, rng, extra)
    held, used_h, c_held = build_split(recipe, held_samples, rs.n_heldout_pairs, "heldout", labeller,
                                       random.Random(f"{recipe.seed}:rscorer:heldout"), extra)
    n_policy = len(held_p) + len(train_p)
    for split, rows_, samples_, counts_ in (("train", train, train_samples, c_train),
                                            ("heldout", held, held_samples, c_held)):
        if not rows_:
            raise RScorerDataError(_empty_split_error(split, samples_, counts_, n_policy, n_synth, recipe))
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "heldout.jsonl", held)
    keep = ("id", "question", "answer", "category", "source", "scene", "description", "choices")
    write_jsonl(out / "samples.jsonl", [{k: s[k] for k in keep if k in s} for s in used_t + used_h])
    return {"counts": {"train_pairs": c_train["pairs"], "heldout_pairs": c_held["pairs"],
                       "train_rows": len(train), "heldout_rows": len(held),
                       "train_model_pairs": c_train["model_pairs"], "heldout_model_pairs": c_held["model_pairs"],
                       "policy_samples_train": len(train_p), "policy_samples_heldout": len(held_p),
                       "samples": len(used_t) + len(used_h),
                       "model_candidates": sum(map(len, extra.values()))},
            "requested": {"train_pairs": rs.n_train_pairs, "heldout_pairs": rs.n_heldout_pairs},
            "labels_train": c_train["labels"], "labels_heldout": c_held["labels"],
            "label_failed": c_train["label_failed"] + c_held["label_failed"],
            "timings_s": {"build": round(time.time() - t0, 2)}}
