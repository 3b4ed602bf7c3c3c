"""Stage ``data``: write the RFT, calibration and eval splits (and the base model's short-answer set).

``srcal data build --recipe R --out DIR|s3://…`` runs this through :func:`srcal.stages.execute`, which
gives it a scratch directory and publishes it atomically. Output, all relative to the artifact::

    rft.jsonl  calib.jsonl  eval.jsonl     the three disjoint splits, each 2:1:1 over the categories
    base_train.jsonl                       short-answer samples for the tiny base LVLM (shapes world only)
    images/<id>.png                        every image a row references
    rejected.jsonl                         quarantined input rows with file, line/row, id, field, reason
    summary.json                           counts per split × category × source, rejections, timings

Two worlds (``data.world``):

* ``shapes``: :func:`srcal.world.shapes.generate_samples` per split and category, with id prefixes
  ``<split>-<category>`` so ids are disjoint by construction and every split hits its category quotas
  exactly. Everything is a function of ``seed`` and the ``data`` section: the same recipe gives
  byte-identical files.
* ``real``: every ``data.sources`` entry goes through its adapter (:mod:`srcal.data.adapters`), then
  :func:`srcal.data.mix.mix_splits` draws the splits; images of rows not drawn are removed.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from pathlib import Path

from srcal.config import Recipe
from srcal.data.mix import category_quotas, mix_splits, ratio_deviation, split_report
from srcal.data.schema import check_rejected_share, rejected_entry, sample_problems, write_jsonl

log = logging.getLogger("srcal.data.build")

OUTPUTS = ("rft.jsonl", "calib.jsonl", "eval.jsonl", "base_train.jsonl", "rejected.jsonl", "summary.json", "images")


def run_data_build(recipe: Recipe, inputs: dict[str, Path], out: Path, **options) -> dict:
    """Build the data artifact into ``out`` (a scratch dir; leftovers of an earlier try are removed)."""
    if options:
        raise ValueError(f"stage data takes no options, got {sorted(options)}")
    t0 = time.time()
    out = Path(out)
    _clear(out)
    data = recipe.data
    if data.world == "shapes":
        splits, rejected = build_shapes(recipe, out)
    else:
        splits, rejected = build_real(recipe, out)
    t_build = time.time() - t0
    _check_disjoint(splits)
    for name, rows in splits.items():
        write_jsonl(out / f"{name}.jsonl", rows)
    write_jsonl(out / "rejected.jsonl", rejected)
    summary = {
        "world": data.world,
        "seed": recipe.seed,
        "ratio": list(data.category_ratio),
        "counts": {name: split_report(rows, requested=_requested(recipe, name)) for name, rows in splits.items()},
        "ratio_deviation": {name: round(ratio_deviation(split_report(rows)["by_category"], data.category_ratio), 4)
                            for name, rows in splits.items()},
        "rejected": {"total": len(rejected),
                     "by_field": dict(Counter(r["field"] or "<row>" for r in rejected).most_common()),
                     "by_file": dict(Counter(r["file"] for r in rejected).most_common()),
                     "examples": rejected[:3]},
        "n_images": sum(1 for _ in (out / "images").glob("*.png")),
        "timings_s": {"build": round(t_build, 3), "write": round(time.time() - t0 - t_build, 3)},
    }
    log.info("data: %s", {k: v["n"] for k, v in summary["counts"].items()})
    return summary


def build_shapes(recipe: Recipe, out: Path) -> tuple[dict[str, list[dict]], list[dict]]:
    """Generate every split from the shapes world, each free of content seen in an earlier split.

    Ids alone would not make the eval set held out: a small world repeats (question, scene) pairs, and
    with the tiny recipe ~6% of eval rows would be exact copies of training rows. Splits are built in the
    order base_train → rft → calib → eval, and a sample whose (question, scene) already occurred is
    skipped; the generator is asked for more until every category quota is met. A row failing the schema
    is quarantined (a guard against generator bugs).
    """
    data = recipe.data
    sizes = {"base_train": data.base_train_size, "rft": data.rft_size, "calib": data.calib_size,
             "eval": data.eval_size}
    (out / "images").mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    splits: dict[str, list[dict]] = {}
    rejected: list[dict] = []
    for split, n in sizes.items():
        rows: list[dict] = []
        for category, q in category_quotas(n, data.category_ratio).items():
            if q:
                rows += _fresh_samples(recipe, split, category, q, seen, out, rejected)
        check_rejected_share(f"shapes world ({split})", n, [r for r in rejected if r["file"] == f"shapes:{split}"],
                             data.max_rejected_share)
        splits[split] = rows
    return {s: splits[s] for s in ("rft", "calib", "eval", "base_train")}, rejected


def _content_key(sample: dict) -> str:
    scene = {k: v for k, v in (sample.get("scene") or {}).items() if k != "vocab"}
    return json.dumps([sample["question"], scene], sort_keys=True)


def _fresh_samples(recipe: Recipe, split: str, category: str, q: int, seen: set[str], out: Path,
                   rejected: list[dict]) -> list[dict]:
    """The first ``q`` generated samples whose content is not in ``seen``; images saved as PNG.

    ``generate_samples`` is deterministic and prefix-stable (asking for more returns the same first ones),
    so over-generating keeps the result a pure function of the recipe.
    """
    from srcal.world.shapes import generate_samples

    n_gen = q + max(8, q // 4)
    while True:
        kept: list[tuple[dict, object]] = []
        keys: set[str] = set()
        bad: list[dict] = []
        for sample, image in generate_samples(recipe.data.shapes, n_gen, category, recipe.seed, f"{split}-{category}"):
            problems = sample_problems(sample)
            if problems:
                bad.append(rejected_entry(f"shapes:{split}", None, sample.get("id"), *problems[0]))
                continue
            key = _content_key(sample)
            if key in seen or key in keys:
                continue
            keys.add(key)
            kept.append((sample, image))
            if len(kept) == q:
                break
        if len(kept) == q:
            break
        if n_gen >= 50 * q:
            raise ValueError(f"the shapes world has too few distinct {category} samples for {split} "
                             f"({len(kept)} new of {q} needed after {n_gen} tries); enlarge data.shapes "
                             "(grid, max_objects, colors, max_value) or lower the split sizes")
        n_gen *= 2
    rejected += bad
    seen |= keys
    for sample, image in kept:
        image.save(out / sample["image"], format="PNG")
    return [s for s, _ in kept]


def build_real(recipe: Recipe, out: Path) -> tuple[dict[str, list[dict]], list[dict]]:
    """Read every source through its adapter, then mix 2:1:1 into disjoint splits."""
    from srcal.data.adapters import read_source

    data = recipe.data
    labels = [s.name or s.adapter for s in data.sources]
    dup = sorted(label for label, c in Counter(labels).items() if c > 1)
    if dup:
        raise ValueError(f"data.sources: the label(s) {dup} are used by more than one source; give each "
                         "source a distinct `name` (ids and image files are prefixed by it)")
    pool: list[dict] = []
    eval_pool: list[dict] = []
    rejected: list[dict] = []
    for src, label in zip(data.sources, labels, strict=True):
        rows, rej = read_source(src.adapter, src.path, category=src.category, out_dir=out, source=label,
                                max_rows=src.max_rows, max_rejected_share=data.max_rejected_share)
        (eval_pool if src.split == "eval" else pool).extend(rows)
        rejected += rej
    sizes = {"rft": data.rft_size, "calib": data.calib_size, "eval": data.eval_size}
    splits, _ = mix_splits(pool, sizes, data.category_ratio, recipe.seed, eval_pool=eval_pool)
    used = {r["image"] for rows in splits.values() for r in rows}
    for p in (out / "images").glob("*.png"):
        if f"images/{p.name}" not in used:
            p.unlink()
    return splits, rejected


def _requested(recipe: Recipe, split: str) -> int:
    return {"rft": recipe.data.rft_size, "calib": recipe.data.calib_size, "eval": recipe.data.eval_size,
            "base_train": recipe.data.base_train_size}[split]


def _check_disjoint(splits: dict[str, list[dict]]) -> None:
    """No id in two splits (a leak from training into calibration or evaluation would void the results)."""
    seen: dict[str, str] = {}
    for name, rows in splits.items():
        for r in rows:
            if r["id"] in seen:
                raise RuntimeError(f"sample id {r['id']!r} is in both {seen[r['id']]} and {name}; this is a bug")
            seen[r["id"]] = name


def _clear(out: Path) -> None:
    """Remove what an earlier, failed attempt left in the scratch dir, so it is never published."""
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()

