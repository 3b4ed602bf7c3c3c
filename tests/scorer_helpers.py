"""Helpers shared by the R-Scorer tests: a small labelled pair set and a tiny judge directory."""

from __future__ import annotations

import json
import random
from pathlib import Path

from srcal.config import load_recipe


def tiny_recipe(*overrides: str):
    """The tiny recipe with a small, fast judge workload."""
    return load_recipe("tiny", ["rscorer.n_train_pairs=60", "rscorer.n_heldout_pairs=20", "rscorer.steps=4",
                                "rscorer.batch_size=4", *overrides])


def untrained_judge(recipe, out: Path) -> Path:
    """A randomly initialised tiny judge saved like ``rscorer-train`` saves one (model, tokenizer, meta)."""
    from srcal.scorer.train import JUDGE_META, build_tiny_judge, label_token_ids

    out.mkdir(parents=True, exist_ok=True)
    tok = build_tiny_judge(recipe, out)
    rs = recipe.rscorer
    (out / JUDGE_META).write_text(json.dumps({
        "input_format": rs.input_format, "prompt_template": rs.prompt_template, "labels": ["A", "B", "C"],
        "label_token_ids": label_token_ids(tok), "answer_prefix": recipe.rap_answer_prefix}))
    return out


def candidate_rows(recipe, n_samples: int, n_cands: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(samples, candidates.jsonl rows) from teacher RAPs and corruptions, the search stage's schema."""
    from srcal.scorer.data import judge_samples, response_pool

    rng = random.Random(seed)
    samples = judge_samples(recipe, n_samples, f"cands{seed}")
    rows = []
    for s in samples:
        pool = response_pool(s, rng, recipe.rap_answer_prefix, 0.0)[:n_cands]
        rows += [{"id": f"{s['id']}#c{i}", "sample_id": s["id"], "index": i, "text": t}
                 for i, (_, t) in enumerate(pool)]
    return samples, rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
