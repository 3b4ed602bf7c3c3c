"""The 2:1:1 mixer: disjoint RFT / calibration / eval splits drawn over the three categories.

SRC (§4.1 of the paper) draws ~20K RFT and 12K calibration samples 2:1:1 from perception & world
knowledge / chart understanding / math & science, the two sets disjoint; we add a held-out eval split
drawn the same way. Everything is a pure function of (rows, sizes, ratio, seed): the pool is sorted by id
before a seeded shuffle, so input order (file order, parquet row groups) never changes the result.

When a category has too few rows for a split's quota, the split is *shrunk* so the ratio still holds
(the paper's mix is what the method is tuned for) and the shortfall is reported, never hidden.
"""

from __future__ import annotations

import logging
import random
from collections import Counter

from srcal.data.schema import CATEGORIES

log = logging.getLogger("srcal.data.mix")

SPLITS: tuple[str, ...] = ("rft", "calib", "eval")


def category_quotas(n: int, ratio: list[float] | tuple[float, ...]) -> dict[str, int]:
    """Split ``n`` over CATEGORIES by ``ratio`` with largest remainders (ties go to the earlier category).

    600 at 2:1:1 → 300/150/150; 10 at 2:1:1 → 5/3/2 (remainders .0/.5/.5, the tie goes to chart).
    """
    total = float(sum(ratio))
    exact = [n * r / total for r in ratio]
    base = [int(x) for x in exact]
    order = sorted(range(len(ratio)), key=lambda i: (-(exact[i] - base[i]), i))
    for i in order[: n - sum(base)]:
        base[i] += 1
    return dict(zip(CATEGORIES, base, strict=True))


def fit_quotas(n: int, ratio, available: dict[str, int]) -> dict[str, int]:
    """The largest quotas ≤ ``n`` in ``ratio`` that ``available`` rows per category can fill."""
    for m in range(n, -1, -1):
        q = category_quotas(m, ratio)
        if all(q[c] <= available.get(c, 0) for c in CATEGORIES):
            return q
    return dict.fromkeys(CATEGORIES, 0)  # pragma: no cover - m = 0 always fits


def _shuffled(rows: list[dict], seed: int, tag: str) -> list[dict]:
    rows = sorted(rows, key=lambda r: r["id"])
    random.Random(f"{seed}:mix:{tag}").shuffle(rows)
    return rows


def mix_splits(pool: list[dict], sizes: dict[str, int], ratio, seed: int,
               eval_pool: list[dict] | None = None) -> tuple[dict[str, list[dict]], dict]:
    """Draw the splits in order rft → calib → eval; returns (splits, report).

    ``pool`` feeds every split; ``eval_pool`` (sources marked ``split: eval``, e.g. a benchmark's test
    set) feeds only eval, before any leftover pool rows. Ids must be unique across both pools (raises
    otherwise): a sample in two splits would leak training data into calibration or evaluation.
    Within a split rows are ordered by (category, id) so files diff cleanly.
    """
    eval_pool = eval_pool or []
    ids = Counter(r["id"] for r in [*pool, *eval_pool])
    dup = [i for i, c in ids.items() if c > 1]
    if dup:
        raise ValueError(f"{len(dup)} sample ids occur more than once across sources, e.g. {dup[:3]}; "
                         "give each source a distinct `name`")
    remaining = {c: _shuffled([r for r in pool if r["category"] == c], seed, c) for c in CATEGORIES}
    eval_first = {c: _shuffled([r for r in eval_pool if r["category"] == c], seed, "eval:" + c) for c in CATEGORIES}
    splits: dict[str, list[dict]] = {}
    report: dict[str, dict] = {}
    for split in SPLITS:
        n = sizes.get(split, 0)
        candidates = {c: (eval_first[c] if split == "eval" else []) + remaining[c] for c in CATEGORIES}
        quotas = fit_quotas(n, ratio, {c: len(v) for c, v in candidates.items()})
        chosen: list[dict] = []
        for c in CATEGORIES:
            take = candidates[c][: quotas[c]]
            chosen += take
            taken = {r["id"] for r in take}
            remaining[c] = [r for r in remaining[c] if r["id"] not in taken]
        chosen.sort(key=lambda r: (CATEGORIES.index(r["category"]), r["id"]))
        splits[split] = chosen
        report[split] = split_report(chosen, requested=n)
        if len(chosen) < n:
            short = {c: f"{len(candidates[c])} available for {category_quotas(n, ratio)[c]}" for c in CATEGORIES}
            report[split]["shortfall"] = short
            log.warning("split %s: %d of %d requested (kept the %s ratio); per category: %s",
                        split, len(chosen), n, ":".join(f"{r:g}" for r in ratio), short)
        log.info("split %s: %d samples; by category %s; by source %s", split, len(chosen),
                 report[split]["by_category"], report[split]["by_source"])
    return splits, report


def split_report(rows: list[dict], requested: int | None = None) -> dict:
    """Counts per category and per source (and per category × source) of one split."""
    by_cat = Counter(r["category"] for r in rows)
    by_src = Counter(r["source"] for r in rows)
    by_both = Counter(f"{r['category']}/{r['source']}" for r in rows)
    out = {"n": len(rows), "by_category": {c: by_cat.get(c, 0) for c in CATEGORIES},
           "by_source": dict(sorted(by_src.items())), "by_category_source": dict(sorted(by_both.items()))}
    if requested is not None:
        out["requested"] = requested
    return out


def ratio_deviation(counts: dict[str, int], ratio) -> float:
    """Largest |share − target share| over the categories (0.0 = exactly on ratio)."""
    n = sum(counts.values())
    total = float(sum(ratio))
    if n == 0:
        return 0.0
    return max(abs(counts.get(c, 0) / n - r / total) for c, r in zip(CATEGORIES, ratio, strict=True))
