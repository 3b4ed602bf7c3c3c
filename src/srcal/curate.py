"""Stage 4a: confidence-weighted curation of preference pairs from R-Scorer's pairwise judgments.

SRC (Wu et al., ICML 2025, §3.3) scores every candidate against every other *in pairs* and then picks,
per sample, the best candidate as ``chosen`` and the worst as ``rejected`` for DPO. The paper publishes no
formula for the aggregation, so this module makes one explicit, small and testable:

1. **Debiased pair probability.** The judge reads each unordered pair in both orders. With ``p(X)`` the
   judge's probability of verdict X and ties split evenly between the two sides::

       P_first(i≻j)  = p_ij(A) + ½ p_ij(C)      # i shown first, as A
       P_second(i≻j) = p_ji(B) + ½ p_ji(C)      # i shown second, as B
       P(i≻j)        = ½ [P_first + P_second]

   so a judge that always prefers position A gives P = ½ (no information), not a fake preference.
2. **Pair confidence** ``c_ij = |2P − 1| · (1 − |P_first − P_second|)``: *decisiveness* (how far from a
   coin flip) times *order consistency* (the two readings agree). A tie, or a verdict that flips with the
   order, carries ~0 confidence.
3. **Per-candidate score**, one of:
   - ``weighted`` (SRC): ``s_i = Σ_j c_ij P(i≻j) / Σ_j c_ij`` — the confidence-weighted mean win
     probability; comparisons the judge could not decide do not pull every candidate towards ½;
   - ``uniform`` (ablation): ``s_i = mean_j P(i≻j)`` (PairRM's soft Borda on probabilities);
   - ``bradley_terry``: strengths fitted by Hunter's (2004) MM algorithm on the soft win counts.
4. **Selection** (:func:`pick`). ``chosen`` = the best-scored candidate of the *chosen pool* — every
   candidate (``chosen_pool: all``, the paper's argmax), or only those whose answer is right against known
   ground truth (``chosen_pool: correct``), and with ``chosen_rap_format`` only those in clean RAP form;
   ``rejected`` = the worst-scored candidate *among the others* (never the chosen one itself: with a
   restricted pool the chosen may be the judge's overall worst, and an argmin over all candidates would
   pair it with itself). A sample is dropped, with the reason recorded, when the margin
   ``P(chosen≻rejected) − ½`` (negative when the judge prefers the rejected one) or its mean pair
   confidence is below the recipe's thresholds, or (``require_correct``) when the chosen candidate's
   answer is wrong against known ground truth. A sample with no ground truth is never vetoed: under
   ``chosen_pool: correct`` its chosen pool is every candidate (counted as ``no_ground_truth``), and a
   split with no ground truth at all is an error (``chosen_pool: correct`` would mean ``all`` silently).

``curate.judge: oracle`` (ablation, shapes world only) replaces steps 1–3 by the oracle's rationale
factuality (share of true claims, :func:`srcal.world.oracle.assess`): candidates that make no checkable
claim are not ranked, P(i≻j) = ½ + ½ (f_i − f_j) and every pair has confidence 1; selection and filters
are the same, so judge-curated and oracle-curated rounds differ only in who ranks. On the shapes world the
summary also measures the R-Scorer against the oracle on the candidates it judged (``judge_vs_oracle``).

Everything here is numpy, the stdlib and the pure-Python shapes oracle: the math functions are pure and
the stage function only reads and writes JSONL.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srcal.run.jsonl import read_jsonl, write_jsonl

log = logging.getLogger("srcal.curate")

# ---------------------------------------------------------------------------------------------- math


def verdict_probs(row: dict[str, Any]) -> tuple[float, float, float]:
    """(p_A, p_B, p_C) of one judgment row, renormalised to sum to 1.

    Judges read A/B/C from the verdict position's logits; a remote judge may return only A and B (no tie
    token) or values that do not sum exactly to 1, so missing keys count as 0 and the triple is rescaled.
    Raises ValueError on negative, non-finite or all-zero probabilities so a broken judge is not averaged
    into a preference.
    """
    import math

    p = [float(row.get(k, 0.0) or 0.0) for k in ("p_A", "p_B", "p_C")]
    if any(not math.isfinite(x) or x < 0 for x in p):
        raise ValueError(f"verdict probabilities must be finite and non-negative, got {p}")
    total = sum(p)
    if total <= 0:
        raise ValueError("verdict probabilities are all zero")
    return p[0] / total, p[1] / total, p[2] / total


def first_order_win(p: tuple[float, float, float]) -> float:
    """P(the response shown as A wins) from one reading, with a tie split evenly: p_A + ½ p_C."""
    return p[0] + 0.5 * p[2]


def debiased_preference(p_first: float | None, p_second: float | None) -> tuple[float, float]:
    """(P(i≻j), order consistency) from the reading with i first and the one with i second.

    ``p_first`` = P(i wins) read with i as A; ``p_second`` = P(i wins) read with i as B (i.e. p_B + ½p_C
    of the swapped reading). Averaging cancels a constant position bias. Consistency = 1 − |p_first −
    p_second|; when only one order was read the consistency is unknown and counted as 1 (the schedule, not
    the judge, is to blame), so the pair's confidence is its decisiveness alone.
    """
    if p_first is None and p_second is None:
        raise ValueError("a pair needs at least one reading")
    if p_first is None:
        return p_second, 1.0
    if p_second is None:
        return p_first, 1.0
    return 0.5 * (p_first + p_second), 1.0 - abs(p_first - p_second)


def pair_confidence(p: float, consistency: float) -> float:
    """Confidence of a debiased pair: decisiveness |2P − 1| times order consistency, in [0, 1]."""
    return abs(2.0 * p - 1.0) * consistency


@dataclass
class PairMatrix:
    """All pairwise evidence for one sample's N candidates.

    ``P[i, j]`` = P(i≻j) (``P[j, i] = 1 − P[i, j]``), ``C[i, j] = C[j, i]`` = pair confidence, and
    ``judged[i, j]`` marks pairs read at least once (a sparse schedule leaves some unjudged).
    """

    n: int
    P: Any  # np.ndarray (n, n)
    C: Any  # np.ndarray (n, n)
    judged: Any  # np.ndarray bool (n, n)
    consistency: Any  # np.ndarray (n, n)


def build_pair_matrix(n: int, readings: Iterable[tuple[int, int, tuple[float, float, float]]]) -> PairMatrix:
    """Fold ordered readings ``(a, b, (p_A, p_B, p_C))`` — a shown first — into a :class:`PairMatrix`.

    Repeated readings of the same ordered pair are averaged (a shard retried twice must not count twice).
    Self-pairs and out-of-range indices raise ValueError.
    """
    import numpy as np

    sums: dict[tuple[int, int], list[float]] = defaultdict(list)
    for a, b, p in readings:
        if a == b or not (0 <= a < n and 0 <= b < n):
            raise ValueError(f"bad pair ({a}, {b}) for {n} candidates")
        sums[(a, b)].append(first_order_win(p))  # P(a wins | a shown first)
    P = np.full((n, n), 0.5)
    C = np.zeros((n, n))
    K = np.ones((n, n))
    judged = np.zeros((n, n), dtype=bool)
    for i in range(n):
        for j in range(i + 1, n):
            first = np.mean(sums[(i, j)]) if (i, j) in sums else None
            # reading (j, i): P(j wins | j shown first); i wins with 1 − that (its p_B + ½ p_C)
            second = 1.0 - np.mean(sums[(j, i)]) if (j, i) in sums else None
            if first is None and second is None:
                continue
            p, k = debiased_preference(first, second)
            c = pair_confidence(p, k)
            P[i, j], P[j, i] = p, 1.0 - p
            C[i, j] = C[j, i] = c
            K[i, j] = K[j, i] = k
            judged[i, j] = judged[j, i] = True
    return PairMatrix(n=n, P=P, C=C, judged=judged, consistency=K)


def weighted_win_scores(m: PairMatrix) -> Any:
    """SRC's score: s_i = Σ_j c_ij P(i≻j) / Σ_j c_ij over judged j ≠ i; ½ when no pair is confident."""
    import numpy as np

    w = np.where(m.judged, m.C, 0.0)
    num = (w * m.P).sum(axis=1)
    den = w.sum(axis=1)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.5)


def uniform_win_scores(m: PairMatrix) -> Any:
    """Ablation: s_i = mean over judged j of P(i≻j), every comparison counted equally."""
    import numpy as np

    cnt = m.judged.sum(axis=1)
    num = np.where(m.judged, m.P, 0.0).sum(axis=1)
    return np.where(cnt > 0, num / np.maximum(cnt, 1), 0.5)


def bradley_terry_scores(m: PairMatrix, *, weighted: bool = True, prior: float = 0.1,
                         iters: int = 200, tol: float = 1e-9) -> Any:
    """Bradley–Terry strengths π (normalised to mean log 0) by Hunter's MM algorithm on soft counts.

    Soft wins ``W_ij = w_ij P(i≻j)`` with ``w_ij`` = pair confidence (``weighted``) or 1, over judged
    pairs. Update: ``π_i ← (Σ_j W_ij + prior) / (Σ_j (W_ij + W_ji)/(π_i + π_j) + 2·prior/(π_i + 1))`` —
    the ``prior`` is one virtual half-win and half-loss against a reference of strength 1, which keeps the
    MLE finite when a candidate wins (or loses) every comparison. Returns log-strengths (higher = better).
    """
    import numpy as np

    n = m.n
    w = np.where(m.judged, m.C if weighted else 1.0, 0.0)
    W = w * m.P  # W[i, j]: soft wins of i over j
    N = W + W.T
    wins = W.sum(axis=1)
    pi = np.ones(n)
    for _ in range(iters):
        denom = (N / (pi[:, None] + pi[None, :])).sum(axis=1) + 2.0 * prior / (pi + 1.0)
        new = (wins + prior) / denom
        new /= np.exp(np.mean(np.log(new)))
        if np.max(np.abs(new - pi)) < tol:
            pi = new
            break
        pi = new
    return np.log(pi)


def candidate_scores(m: PairMatrix, aggregation: str) -> Any:
    """Per-candidate score under the recipe's ``curate.aggregation``."""
    if aggregation == "weighted":
        return weighted_win_scores(m)
    if aggregation == "uniform":
        return uniform_win_scores(m)
    if aggregation == "bradley_terry":
        return bradley_terry_scores(m)
    raise ValueError(f"unknown aggregation {aggregation!r}; choose weighted, uniform or bradley_terry")


@dataclass
class Selection:
    """Outcome for one sample: chosen/rejected indices, the evidence, and why it was dropped (if it was)."""

    best: int
    worst: int
    scores: list[float]
    margin: float  # P(best ≻ worst) − ½
    confidence: float  # mean pair confidence over judged pairs
    pair_confidence: float  # confidence of the best-vs-worst pair
    drop_reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def pick(s: Any, *, correct: list[bool | None] | None = None, chosen_pool: str = "all",
         rap_ok: list[bool] | None = None, chosen_rap_format: bool = False,
         rankable: list[bool] | None = None) -> tuple[int, int, str | None]:
    """(chosen, rejected, drop reason or None) from per-candidate scores ``s`` (module docstring, step 4).

    Only ``rankable`` candidates (default: all) take part. The chosen pool is narrowed by ground truth
    (``chosen_pool="correct"``: right answers; a sample whose every ``correct`` is None has no ground truth
    and keeps all candidates) and by ``chosen_rap_format`` (``rap_ok``); chosen = its best score, rejected =
    the worst score among the remaining rankable candidates. Ties go to the lowest index.
    """
    n = len(s)
    pool = [i for i in range(n) if rankable is None or rankable[i]]
    if len(pool) < 2:
        return (pool[0] if pool else 0), (pool[0] if pool else 0), "no_preference"
    chosen_from = pool
    if chosen_pool == "correct" and correct is not None and any(c is not None for c in correct):
        chosen_from = [i for i in chosen_from if correct[i]]
        if not chosen_from:
            return _best(s, pool), _worst(s, pool), "no_correct_candidate"
    if chosen_rap_format and rap_ok is not None:
        chosen_from = [i for i in chosen_from if rap_ok[i]]
        if not chosen_from:
            return _best(s, pool), _worst(s, pool), "no_well_formed_candidate"
    best = _best(s, chosen_from)
    return best, _worst(s, [i for i in pool if i != best]), None


def _best(s: Any, idx: list[int]) -> int:
    return max(idx, key=lambda i: (float(s[i]), -i))


def _worst(s: Any, idx: list[int]) -> int:
    return min(idx, key=lambda i: (float(s[i]), i))


def _filters(sel: Selection, *, min_margin: float, min_confidence: float, correct: list[bool | None] | None,
             require_correct: bool) -> Selection:
    """The recipe's thresholds, first failing one named (in this order)."""
    if sel.margin < min_margin:
        sel.drop_reason = "low_margin"
    elif sel.confidence < min_confidence:
        sel.drop_reason = "low_confidence"
    elif require_correct and correct is not None and correct[sel.best] is False:
        sel.drop_reason = "chosen_wrong"
    return sel


def select_pair(m: PairMatrix, aggregation: str, *, min_margin: float, min_confidence: float,
                correct: list[bool | None] | None = None, require_correct: bool = False,
                chosen_pool: str = "all", rap_ok: list[bool] | None = None,
                chosen_rap_format: bool = False) -> Selection:
    """Chosen and rejected by the judge's scores (:func:`pick`), then the recipe's filters.

    ``chosen_pool="correct"`` picks the chosen candidate as the best-scored among those whose answer is
    right (ground truth known), rather than dropping the sample when the overall best is wrong: the judge
    still ranks the rationales, the ground truth only vetoes wrong answers. Samples with no right
    candidate are dropped as ``no_correct_candidate``.

    The margin is the *observed* debiased P(chosen≻rejected) − ½ when that pair was judged, otherwise the
    score model's estimate (½ + half the score gap for win-probability scores; the BT probability for
    Bradley–Terry).
    """
    import numpy as np

    s = candidate_scores(m, aggregation)
    best, worst, reason = pick(s, correct=correct, chosen_pool=chosen_pool, rap_ok=rap_ok,
                               chosen_rap_format=chosen_rap_format)
    if reason:
        return Selection(best, worst, s.tolist(), 0.0, 0.0, 0.0, reason)
    iu = np.triu_indices(m.n, 1)
    judged_c = m.C[iu][m.judged[iu]]
    conf = float(judged_c.mean()) if judged_c.size else 0.0
    if abs(s[best] - s[worst]) < 1e-9:  # all candidates scored alike (up to float noise)
        return Selection(best, worst, s.tolist(), 0.0, conf, 0.0, "no_preference")
    if m.judged[best, worst]:
        p_bw = float(m.P[best, worst])
    elif aggregation == "bradley_terry":
        p_bw = float(1.0 / (1.0 + np.exp(s[worst] - s[best])))
    else:
        p_bw = float(0.5 + 0.5 * (s[best] - s[worst]))
    sel = Selection(best, worst, s.tolist(), p_bw - 0.5, conf, float(m.C[best, worst]))
    return _filters(sel, min_margin=min_margin, min_confidence=min_confidence, correct=correct,
                    require_correct=require_correct)


def select_by_oracle(factuality: list[float | None], *, min_margin: float, min_confidence: float,
                     correct: list[bool | None] | None = None, require_correct: bool = False,
                     chosen_pool: str = "all", rap_ok: list[bool] | None = None,
                     chosen_rap_format: bool = False) -> Selection:
    """``curate.judge: oracle``: rank by the oracle's factuality ``f`` (None = no checkable claim, not
    ranked; fewer than two ranked → ``no_checkable_claims``); P(chosen≻rejected) = ½ + ½ (f_c − f_r), so
    the margin is half the factuality gap; confidence 1."""
    s = [f if f is not None else 0.0 for f in factuality]
    if sum(f is not None for f in factuality) < 2:  # the oracle cannot rank rationales without claims
        return Selection(0, 0, s, 0.0, 0.0, 0.0, "no_checkable_claims")
    best, worst, reason = pick(s, correct=correct, chosen_pool=chosen_pool, rap_ok=rap_ok,
                               chosen_rap_format=chosen_rap_format, rankable=[f is not None for f in factuality])
    if reason:
        return Selection(best, worst, s, 0.0, 0.0, 0.0, reason)
    gap = s[best] - s[worst]
    if abs(gap) < 1e-9:
        return Selection(best, worst, s, 0.0, 1.0, 1.0, "no_preference")
    sel = Selection(best, worst, s, 0.5 * gap, 1.0, 1.0)
    return _filters(sel, min_margin=min_margin, min_confidence=min_confidence, correct=correct,
                    require_correct=require_correct)


# ---------------------------------------------------------------------------------------------- I/O


def _candidate_text(c: Any) -> str:
    return c if isinstance(c, str) else str(c.get("text", ""))


def load_candidates(path: Path) -> dict[str, dict[str, Any]]:
    """candidates.jsonl → {sample id: {"candidates": [row, …] ordered by index, …}}.

    Search writes one row per candidate (``sample_id``, ``index``, ``text``, ``answer`` …); a row that
    already groups a sample (``id`` + ``candidates`` list of strings or dicts) is accepted as well.
    """
    out: dict[str, dict[str, Any]] = {}
    for row in read_jsonl(path):
        if "candidates" in row:
            out[str(row["id"])] = row
            continue
        sid = str(row["sample_id"])
        out.setdefault(sid, {"id": sid, "candidates": []})["candidates"].append(row)
    for row in out.values():
        if row["candidates"] and isinstance(row["candidates"][0], dict) and "index" in row["candidates"][0]:
            row["candidates"].sort(key=lambda c: int(c["index"]))
    return out


def group_judgments(rows: Iterable[dict[str, Any]]) -> tuple[dict[str, list], Counter]:
    """Group judgment rows by sample id into ``[(a, b, (p_A, p_B, p_C))]``; count malformed rows.

    A row is ``{"id", "a", "b", "p_A", "p_B", "p_C"}`` with candidate ``a`` shown first (the scorer may
    also name them ``i``/``j``).
    """
    grouped: dict[str, list] = defaultdict(list)
    bad: Counter = Counter()
    for row in rows:
        try:
            a = int(row["a"] if "a" in row else row["i"])
            b = int(row["b"] if "b" in row else row["j"])
            grouped[str(row["id"])].append((a, b, verdict_probs(row)))
        except (KeyError, TypeError, ValueError) as e:
            bad[f"malformed_judgment: {type(e).__name__}"] += 1
    return grouped, bad


def _is_correct(sample: dict[str, Any], cand: Any, answer_prefix: str) -> bool | None:
    """Whether a candidate's final answer is right, by the project's one scoring rule
    (``srcal.answers.response_correct``, as evaluation uses it); None when the sample has no ground truth."""
    if isinstance(cand, dict) and isinstance(cand.get("correct"), bool):
        return cand["correct"]
    if sample.get("answer") in (None, ""):
        return None
    from srcal.answers import response_correct

    return response_correct(sample, _candidate_text(cand), answer_prefix)


def _search_split(candidates_dir: Path) -> str:
    """The data split the search stage read (its summary's ``split``; ``calib`` for older artifacts)."""
    summary = Path(candidates_dir) / "summary.json"
    if summary.exists():
        return str(json.loads(summary.read_text()).get("split") or "calib")
    return "calib"


def _oracle_checks(sample: dict[str, Any], cands: list[Any], prefix: str) -> list[Any] | None:
    """The oracle's assessment of every candidate (shapes world: the sample has a scene), else None."""
    from srcal.world import in_shapes_world, oracle_assessment

    if not in_shapes_world(sample):
        return None
    return [oracle_assessment(sample, _candidate_text(c), prefix) for c in cands]


def judge_oracle_agreement(readings: list[tuple[int, int, tuple[float, float, float]]], quality: list[float],
                           tie_margin: float = 0.0) -> tuple[int, int]:
    """(agreeing, counted) ordered readings: the judge's argmax verdict vs the noise-free oracle verdict
    (``oracle.response_quality``, tie within ``tie_margin``) over readings where the oracle sees no tie —
    the judge measured on the candidates it really judges, not on held-out teacher RAPs."""
    agree = n = 0
    for a, b, p in readings:
        qa, qb = quality[a], quality[b]
        if abs(qa - qb) <= tie_margin + 1e-9:
            continue
        n += 1
        verdict = "ABC"[max(range(3), key=lambda k: p[k])]
        agree += verdict == ("A" if qa > qb else "B")
    return agree, n


def run_curate(recipe, inputs: dict[str, Path], out: Path, **options: Any) -> dict[str, Any]:
    """Stage ``curate``: judgments + candidates → ``pairs.jsonl`` (chosen/rejected per kept sample),
    ``dropped.jsonl`` (every dropped sample with its reason and evidence) and a summary with the counts.

    Ground truth and scenes come from the data split the search read (its summary's ``split``), by id.
    With ``curate.judge: oracle`` the judgments are not needed and the oracle ranks (module docstring).

    Raises StageError naming the thresholds to relax when fewer than ``curate.min_pairs`` pairs survive —
    a DPO round on a handful of pairs is noise, and TRL would fail later with a less useful message — and
    before selecting anything when ``chosen_pool: correct`` meets a split without any ground truth.
    """
    import numpy as np

    from srcal.config import RecipeError
    from srcal.data.rap import parse_rap
    from srcal.errors import StageError

    cfg = recipe.curate
    prefix = recipe.rap_answer_prefix
    t0 = time.time()
    cand_path = Path(inputs["candidates"]) / "candidates.jsonl"
    candidates = load_candidates(cand_path)
    grouped: dict[str, list] = {}
    bad: Counter = Counter()
    if "judgments" in inputs and (Path(inputs["judgments"]) / "judgments.jsonl").exists():
        grouped, bad = group_judgments(read_jsonl(Path(inputs["judgments"]) / "judgments.jsonl"))
    elif cfg.judge == "rscorer":
        raise StageError("curate: curate.judge=rscorer needs a 'judgments' input (the score stage's output)")
    split = _search_split(Path(inputs["candidates"]))
    truth: dict[str, dict[str, Any]] = {}
    if "data" in inputs and (Path(inputs["data"]) / f"{split}.jsonl").exists():
        truth = {str(r["id"]): r for r in read_jsonl(Path(inputs["data"]) / f"{split}.jsonl")}
    samples = {sid: {**truth.get(sid, {}), **{k: v for k, v in row.items() if k != "candidates"}}
               for sid, row in candidates.items()}
    if cfg.chosen_pool == "correct" and samples and all(s.get("answer") in (None, "") for s in samples.values()):
        raise StageError(
            f"curate: curate.chosen_pool=correct needs ground-truth answers, and none of the {len(samples)} "
            f"searched samples of split '{split}' has one; set --set curate.chosen_pool=all (the judge's best "
            f"candidate, the paper's rule)")

    kept, dropped = [], []
    reasons: Counter = Counter(bad)
    confidences: list[float] = []
    no_truth = 0
    vs_oracle = {"agree": 0, "n": 0}
    for sid, row in candidates.items():
        cands = row.get("candidates") or []
        sample = samples[sid]
        if len(cands) < 2:
            reasons["too_few_candidates"] += 1
            dropped.append({"id": sid, "reason": "too_few_candidates"})
            continue
        checks = _oracle_checks(sample, cands, prefix)
        if cfg.judge == "oracle" and checks is None:
            raise RecipeError(f"curate.judge: 'oracle' needs shapes-world samples with a scene; sample {sid} "
                              f"of split '{split}' has none")
        correct = [_is_correct(sample, c, prefix) for c in cands]
        no_truth += all(c is None for c in correct)
        rap_ok = [parse_rap(_candidate_text(c), prefix).ok for c in cands]
        kw = dict(min_margin=cfg.min_margin, min_confidence=cfg.min_confidence, correct=correct,
                  require_correct=cfg.require_correct, chosen_pool=cfg.chosen_pool, rap_ok=rap_ok,
                  chosen_rap_format=cfg.chosen_rap_format)
        if sid in grouped:
            try:
                m = build_pair_matrix(len(cands), grouped[sid])
            except ValueError as e:
                m = None
                if cfg.judge == "rscorer":
                    reasons["bad_pair_index"] += 1
                    dropped.append({"id": sid, "reason": "bad_pair_index", "error": str(e)})
                    continue
            if m is not None:
                iu = np.triu_indices(m.n, 1)
                confidences += m.C[iu][m.judged[iu]].tolist()
                if checks is not None:
                    from srcal.world.oracle import response_quality

                    a, n = judge_oracle_agreement(grouped[sid], [response_quality(x) for x in checks],
                                                  recipe.labeller.tie_margin)
                    vs_oracle["agree"] += a
                    vs_oracle["n"] += n
        elif cfg.judge == "rscorer":
            reasons["no_judgments"] += 1
            dropped.append({"id": sid, "reason": "no_judgments"})
            continue
        if cfg.judge == "oracle":
            sel = select_by_oracle([x.factuality for x in checks], **kw)
        else:
            sel = select_pair(m, cfg.aggregation, **kw)
        evidence = {"scores": [round(x, 4) for x in sel.scores], "margin": round(sel.margin, 4),
                    "confidence": round(sel.confidence, 4), "pair_confidence": round(sel.pair_confidence, 4),
                    "chosen_index": sel.best, "rejected_index": sel.worst,
                    "chosen_correct": correct[sel.best], "rejected_correct": correct[sel.worst]}
        if checks is not None:
            evidence["chosen_factuality"] = checks[sel.best].factuality
            evidence["rejected_factuality"] = checks[sel.worst].factuality
        if sel.drop_reason:
            reasons[sel.drop_reason] += 1
            dropped.append({"id": sid, "reason": sel.drop_reason, **evidence})
            continue
        kept.append({
            "id": sid,
            "image": sample.get("image"),
            "question": sample.get("question"),
            "choices": sample.get("choices"),
            "answer": sample.get("answer"),
            "category": sample.get("category"),
            "chosen": _candidate_text(cands[sel.best]),
            "rejected": _candidate_text(cands[sel.worst]),
            **evidence,
        })

    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "pairs.jsonl", kept)
    write_jsonl(out / "dropped.jsonl", dropped)
    hist, edges = np.histogram(np.asarray(confidences) if confidences else np.zeros(0), bins=10, range=(0, 1))
    summary = {
        "counts": {"samples": len(candidates), "kept": len(kept), "dropped": len(dropped)},
        "dropped": dict(reasons),
        "judge": cfg.judge,
        "split": split,
        "aggregation": cfg.aggregation,
        "chosen_pool": cfg.chosen_pool,
        "no_ground_truth": no_truth,
        "thresholds": {"min_margin": cfg.min_margin, "min_confidence": cfg.min_confidence,
                       "require_correct": cfg.require_correct, "min_pairs": cfg.min_pairs},
        "kept_chosen_correct": sum(1 for r in kept if r["chosen_correct"]),
        "kept_rejected_correct": sum(1 for r in kept if r["rejected_correct"]),
        "mean_margin": round(float(np.mean([r["margin"] for r in kept])), 4) if kept else None,
        "pair_confidence_hist": {"edges": [round(e, 2) for e in edges.tolist()], "counts": hist.tolist()},
        "timings_s": {"curate": round(time.time() - t0, 3)},
    }
    facts = [(r["chosen_factuality"], r["rejected_factuality"]) for r in kept
             if r.get("chosen_factuality") is not None and r.get("rejected_factuality") is not None]
    if facts:  # shapes world: how much more factual the chosen side is, by the oracle
        summary["oracle"] = {
            "pairs": len(facts),
            "chosen_factuality": round(float(np.mean([c for c, _ in facts])), 4),
            "rejected_factuality": round(float(np.mean([r for _, r in facts])), 4),
            "chosen_more_factual": sum(c > r for c, r in facts),
            "chosen_less_factual": sum(c < r for c, r in facts)}
    if vs_oracle["n"]:
        summary["judge_vs_oracle"] = {"agreement": round(vs_oracle["agree"] / vs_oracle["n"], 4),
                                      "readings": vs_oracle["n"]}
    # no summary.json here: srcal.stages.execute writes the returned summary (with timings and resume key)
    if len(kept) < cfg.min_pairs:
        raise StageError(
            f"curate: only {len(kept)} preference pairs survived (curate.min_pairs={cfg.min_pairs}); "
            f"dropped: {dict(reasons)}. Relax the filter that drops most: --set curate.min_margin=<lower than "
            f"{cfg.min_margin}>, --set curate.min_confidence=<lower than {cfg.min_confidence}>, "
            f"--set curate.require_correct=false, --set curate.chosen_pool=all (no_correct_candidate: no "
            f"candidate has the right answer), or raise data.calib_size / search.n_candidates."
        )
    log.info("curate: kept %d of %d samples; dropped %s", len(kept), len(candidates), dict(reasons))
    return summary
