"""``srcal bench score``: our judge read (shared prefix once, pairs batched, one-token verdict) against one
``generate()`` per ordered pair with a free-text verdict, same judge, same pairs, same process."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from srcal.scorer import judge_format
from srcal.scorer.score import pair_prompt, pair_schedule


def _bench_judge_dir(recipe, run_dir: str | None, judge: str | None, tmp: Path) -> tuple[Path, str]:
    """The judge to benchmark: ``judge=DIR``, else the trained judge of ``run_dir``, else a fresh untrained one."""
    if judge:
        return Path(judge), "given"
    if run_dir and (Path(run_dir) / "rscorer" / "judge" / "srcal_judge.json").exists():
        return Path(run_dir) / "rscorer" / "judge", "trained (run)"
    from srcal.scorer.train import JUDGE_META, build_tiny_judge, label_token_ids

    tok = build_tiny_judge(recipe, tmp)
    rs = recipe.rscorer
    (tmp / JUDGE_META).write_text(json.dumps({"input_format": rs.input_format, "prompt_template": rs.prompt_template,
                                              "labels": list(judge_format.VERDICT_LABELS), "label_token_ids": label_token_ids(tok),
                                              "answer_prefix": recipe.rap_answer_prefix}))
    return tmp, "untrained (random weights)"


def bench_score(recipe, run_dir: str | None = "runs/tiny", judge: str | None = None, samples: str | int = 16,
                baseline_samples: str | int | None = None, **_: Any) -> dict:
    """``srcal bench score``: our read (per sample: shared prefix once, all ordered pairs batched, one-token
    verdict from the label logits) against the naive read (one call per ordered pair, full prompt, greedy
    free-text generation of the verdict, parsed), same judge, same pairs, same process.

    Candidates: ``search.n_candidates`` responses per shapes-world sample (teacher RAPs and corruptions),
    every ordered pair. The result says which judge was used and the share of pairs where both paths give
    the same verdict (an untrained judge rarely generates a label letter, so use a trained one for that).
    """
    import random
    import tempfile

    import torch

    from srcal.scorer.data import judge_samples, response_pool
    from srcal.scorer.judge import HFJudge, last_position_probs

    torch.set_num_threads(max(1, recipe.rscorer.threads or 1))
    n, n_base = int(samples), int(baseline_samples or samples)
    rng = random.Random(recipe.seed)
    with tempfile.TemporaryDirectory(prefix="srcal-bench-score-") as tmp:
        judge_dir, which = _bench_judge_dir(recipe, run_dir, judge, Path(tmp))
        j = HFJudge(judge_dir, batch_size=recipe.score.batch_size)
        groups, meta = [], j.meta
        for s in judge_samples(recipe, n, "bench"):
            pool = [t for _, t in response_pool(s, rng, recipe.rap_answer_prefix, 0.3)][: recipe.search.n_candidates]
            groups.append([pair_prompt(meta, s, pool[a], pool[b]) for a, b in pair_schedule(len(pool), "all")])
        n_pairs = sum(map(len, groups))
        j.read(groups[:1])  # warm-up (allocations, first-call overheads) for both paths
        t0 = time.perf_counter()
        ours = [p for g in j.read(groups) for p in g]
        t_ours = time.perf_counter() - t0
        flat = [p for g in groups for p in g]
        t0 = time.perf_counter()
        plain = last_position_probs(j.model, j.tok, flat, j.label_ids, recipe.score.batch_size)
        t_plain = time.perf_counter() - t0
        base_prompts = [p for g in groups[:n_base] for p in g]
        t0 = time.perf_counter()
        naive = [j.generate_verdict(p, max_new_tokens=2) for p in base_prompts]
        t_naive = time.perf_counter() - t0
    pick = lambda p: "ABC"[max(range(3), key=lambda k: p[k])]
    ours_v = [pick(p) for p in ours]
    same = sum(a == b for a, b in zip(naive, ours_v)) / max(1, len(naive))
    max_dev = max(abs(a - b) for p, q in zip(ours, plain) for a, b in zip(p, q))
    base_rate, ours_rate = len(base_prompts) / t_naive, n_pairs / t_ours
    return {
        "judge": which, "samples": n, "candidates_per_sample": recipe.search.n_candidates,
        "baseline": {"what": "one generate() per ordered pair, full prompt, free-text verdict parsed",
                     "pairs": len(base_prompts), "seconds": round(t_naive, 3), "pairs_per_s": round(base_rate, 2),
                     "unparseable": sum(v is None for v in naive)},
        "ours": {"what": "per sample: shared prefix once + all ordered pairs in one batch, one-token A/B/C read",
                 "pairs": n_pairs, "seconds": round(t_ours, 3), "pairs_per_s": round(ours_rate, 2)},
        "batched_full_prompts": {"pairs": n_pairs, "seconds": round(t_plain, 3),
                                 "pairs_per_s": round(n_pairs / t_plain, 2),
                                 "max_abs_prob_diff_vs_ours": round(max_dev, 6)},
        "same_verdict_share": round(same, 4),
        "speedup": round(ours_rate / base_rate, 2),
    }
