"""Stage ``score``: R-Scorer judges each sample's candidates in pairs, both orders (SRC §3.3).

For a sample with N candidates, schedule ``all`` judges every ordered pair (N(N−1) reads); ``adjacent``
judges a ring (i, i+1) in both orders (2N reads) for large N; ``score.max_pairs_per_sample`` switches a
sample to the ring when ``all`` would exceed it. Each read is one token: P(A), P(B), P(C) of the verdict
(``srcal.scorer.judge``), in-process (``rscorer.serve: hf``) or from the served judge
(``rscorer.serve: openai`` at ``rscorer.url``: vLLM, or KServe in the cluster).

``judgments.jsonl`` — one row per ordered pair read, candidate ``a`` shown first::

    {"id": sample_id, "a": index_a, "b": index_b, "cand_a": id, "cand_b": id, "p_A", "p_B", "p_C", "verdict"}

Bad reads never become ties: a read that fails for good (no verdict token among the returned log-probs,
timeout, HTTP error after retries, server restart) goes to ``missing.jsonl`` with its reason and is counted
in the summary; curation then works with the order that was read, or drops the pair. **Resume**: rows
are appended per ``score.commit_every`` samples and flushed; a re-run of the stage (the stage runner keeps
a stable scratch directory per output) skips every pair already in ``judgments.jsonl`` and retries only
the rest, including earlier misses.

``score.mode: independent`` (the paper's pairwise-vs-independent ablation) scores each candidate alone:
the judge reads ``score.independent_prompt`` and the score is the expectation over the probabilities of
the score tokens ``1``…``10`` (those that are one token in the judge's tokenizer; Qwen-family tokenizers
split ``10``, so there the scale is 1–9). Rows go to ``scores.jsonl``, and ``judgments.jsonl`` gets, for
each ordered pair, P(s_a > s_b), P(s_a < s_b), P(s_a = s_b) under the two independent score
distributions, so curation runs unchanged on either mode.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from srcal.data.schema import prompt_chars_problem
from srcal.run.jsonl import append_jsonl, read_jsonl, write_jsonl
from srcal.scorer import judge_format

log = logging.getLogger("srcal.scorer.score")


# ---------------------------------------------------------------------------------------------------
# Pair schedules (pure)
# ---------------------------------------------------------------------------------------------------
def pair_schedule(n: int, schedule: str, max_pairs: int = 0) -> list[tuple[int, int]]:
    """Ordered pairs (i shown first, j second) over ``n`` candidates.

    ``all``: every i ≠ j, i.e. n(n−1) reads; ``adjacent``: (i, i+1 mod n) and its swap, i.e. 2n reads for
    n > 2 (n = 2: the one pair in both orders). ``max_pairs`` > 0 caps ``all`` by falling back to the ring.
    """
    if n < 2:
        return []
    if schedule == "all" and (not max_pairs or n * (n - 1) <= max_pairs):
        return [(i, j) for i in range(n) for j in range(n) if i != j]
    if schedule not in ("all", "adjacent"):
        raise ValueError(f"score.schedule {schedule!r}: choose 'all' or 'adjacent'")
    ring = {(i, (i + 1) % n) for i in range(n)} if n > 2 else {(0, 1)}
    return sorted(ring | {(j, i) for i, j in ring})


def independent_pair_probs(pa: Sequence[float], pb: Sequence[float]) -> tuple[float, float, float]:
    """(P(s_a > s_b), P(s_a < s_b), P(s_a = s_b)) for independent score distributions over the same scale."""
    gt = sum(pa[i] * pb[j] for i in range(len(pa)) for j in range(len(pb)) if i > j)
    lt = sum(pa[i] * pb[j] for i in range(len(pa)) for j in range(len(pb)) if i < j)
    eq = sum(pa[i] * pb[i] for i in range(min(len(pa), len(pb))))
    return gt, lt, eq


# ---------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------
def load_samples(data_dir: Path) -> dict[str, dict]:
    """Every sample of the data artifact by id (candidates may come from any split)."""
    out: dict[str, dict] = {}
    for name in ("calib.jsonl", "rft.jsonl", "eval.jsonl", "samples.jsonl"):
        for s in read_jsonl(Path(data_dir) / name, missing_ok=True):
            out.setdefault(str(s["id"]), s)
    return out


def group_candidates(rows: list[dict]) -> dict[str, list[dict]]:
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(str(r["sample_id"]), []).append(r)
    for v in by.values():
        v.sort(key=lambda r: int(r.get("index", 0)))
    return by


def make_judge(recipe, judge_dir: Path, url: str | None = None):
    """The judge to score with: in-process (``rscorer.serve: hf``) or the OpenAI-compatible endpoint at
    ``url`` (default ``rscorer.url``)."""
    from srcal.scorer.judge import HFJudge, RemoteJudge

    rs = recipe.rscorer
    if rs.serve == "openai":
        url = url or rs.url
        if not url:
            raise ValueError("rscorer.serve is 'openai' but rscorer.url is empty; give the judge endpoint (…/v1)")
        return RemoteJudge(url, judge_dir, model=rs.served_model, concurrency=rs.concurrency,
                           timeout_s=rs.timeout_s, retries=rs.retries)
    return HFJudge(judge_dir, batch_size=recipe.score.batch_size, threads=rs.threads)


@contextlib.contextmanager
def judge_endpoint(recipe, judge_dir: Path, log_dir: Path) -> Iterator[str | None]:
    """The URL to score against: ``rscorer.url`` if set; with ``rscorer.serve: openai`` and no URL (what the
    real recipes say under ``srcal run``), a vLLM OpenAI server of ``judge_dir`` started for this stage
    (the vLLM environment of ``srcal.serve.vllm_env.find_vllm_python``; its log in ``judge-server.log``);
    None when the judge runs in-process."""
    rs = recipe.rscorer
    if rs.serve != "openai" or rs.url:
        yield rs.url or None
        return
    from srcal.serve.servers import serve_judge_locally
    from srcal.models.loading import pick_device

    gpu = pick_device(recipe.device) == "cuda"
    with serve_judge_locally(judge_dir, gpu=gpu, log_path=str(Path(log_dir) / "judge-server.log")) as url:
        log.info("score: serving the judge %s at %s", judge_dir, url)
        yield url


def pair_prompt(meta: dict, sample: dict, text_a: str, text_b: str) -> str:
    ji = judge_format.judge_input(sample, text_a, text_b, meta["input_format"], meta.get("answer_prefix", "Answer:"))
    return judge_format.render_prompt(meta["prompt_template"], ji)


# ---------------------------------------------------------------------------------------------------
# Writer with resume
# ---------------------------------------------------------------------------------------------------
class JudgmentWriter:
    """Append-only ``judgments.jsonl``; knows which ordered pairs are already judged (resume)."""

    def __init__(self, out: Path, name: str = "judgments.jsonl"):
        self.path = Path(out) / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # a torn last line from a killed run is skipped (resume re-reads that pair)
        rows = read_jsonl(self.path, missing_ok=True)
        self.done = {(str(r["id"]), int(r["a"]), int(r["b"])) for r in rows if "p_A" in r}
        self.resumed = len(self.done)
        if self.path.exists():  # rewrite without a torn last line, so appends start on a clean line
            write_jsonl(self.path, rows)
        self.path.touch()  # an empty file says "nothing judged", rather than a missing artifact

    def append(self, rows: list[dict]) -> None:
        if not rows:
            return
        append_jsonl(self.path, rows)
        self.done |= {(str(r["id"]), int(r["a"]), int(r["b"])) for r in rows}


# ---------------------------------------------------------------------------------------------------
# Stage
# ---------------------------------------------------------------------------------------------------
def _judgment_row(sid: str, ca: dict, cb: dict, probs: list[float]) -> dict:
    p = [round(float(x), 6) for x in probs]
    return {"id": sid, "a": int(ca.get("index", 0)), "b": int(cb.get("index", 0)), "cand_a": ca.get("id"),
            "cand_b": cb.get("id"), "p_A": p[0], "p_B": p[1], "p_C": p[2], "verdict": "ABC"[p.index(max(p))]}


def score_pairwise(recipe, judge, meta: dict, work: list[tuple[str, dict, list[dict]]], writer: JudgmentWriter
                   ) -> tuple[int, list[dict]]:
    """Judge every scheduled, not-yet-judged ordered pair; returns (rows written, missing records)."""
    from srcal.serve.client import Failure

    sc = recipe.score
    written, missing = 0, []
    for start in range(0, len(work), sc.commit_every):
        chunk = work[start : start + sc.commit_every]
        groups, keys = [], []
        for sid, sample, cands in chunk:
            todo = [(i, j) for i, j in pair_schedule(len(cands), sc.schedule, sc.max_pairs_per_sample)
                    if (sid, int(cands[i].get("index", i)), int(cands[j].get("index", j))) not in writer.done]
            if not todo:
                continue
            groups.append([pair_prompt(meta, sample, cands[i]["text"], cands[j]["text"]) for i, j in todo])
            keys.append((sid, cands, todo))
        if not groups:
            continue
        results = judge.read(groups)
        rows = []
        for (sid, cands, todo), res in zip(keys, results):
            for (i, j), r in zip(todo, res):
                if isinstance(r, Failure):
                    missing.append({"id": sid, "a": int(cands[i].get("index", i)), "b": int(cands[j].get("index", j)),
                                    "kind": r.kind, "reason": r.reason})
                else:
                    rows.append(_judgment_row(sid, cands[i], cands[j], r))
        writer.append(rows)
        written += len(rows)
    return written, missing


def score_tokens(tok) -> tuple[list[int], list[int]]:
    """(scores, token ids) of the 1–10 scale entries that are one token after a space in ``tok``."""
    scores, ids = [], []
    for s in range(1, 11):
        enc = tok(f" {s}", add_special_tokens=False)["input_ids"]
        enc2 = tok(str(s), add_special_tokens=False)["input_ids"]
        one = enc if len(enc) == 1 else enc2 if len(enc2) == 1 else None
        if one:
            scores.append(s)
            ids.append(one[0])
    if len(scores) < 2:
        raise RuntimeError("the judge's tokenizer has fewer than two one-token score values; cannot read 1-10")
    return scores, ids


def score_independent(recipe, judge_dir: Path, work, writer: JudgmentWriter, out: Path) -> tuple[int, list[dict]]:
    """Independent mode (module docstring); in-process only."""
    from srcal.scorer.judge import HFJudge, last_position_probs

    judge = HFJudge(judge_dir, batch_size=recipe.score.batch_size, threads=recipe.rscorer.threads)
    scale, ids = score_tokens(judge.tok)
    meta = judge.meta
    rows_s, written = [], 0
    for sid, sample, cands in work:
        d, q = judge_format.shared_fields(sample, meta["input_format"])
        prompts = [recipe.score.independent_prompt.format(
            description=d, question=q,
            response=judge_format.response_field(sample, c["text"], meta["input_format"], meta.get("answer_prefix", "Answer:")))
            for c in cands]
        probs = _renorm_many(last_position_probs(judge.model, judge.tok, prompts, ids, recipe.score.batch_size))
        for c, p in zip(cands, probs):
            rows_s.append({"id": sid, "index": int(c.get("index", 0)), "cand": c.get("id"),
                           "score": round(sum(s * x for s, x in zip(scale, p)), 4), "probs": [round(x, 5) for x in p]})
        rows = []
        for i, j in pair_schedule(len(cands), recipe.score.schedule, recipe.score.max_pairs_per_sample):
            if (sid, int(cands[i].get("index", i)), int(cands[j].get("index", j))) in writer.done:
                continue
            rows.append(_judgment_row(sid, cands[i], cands[j], list(independent_pair_probs(probs[i], probs[j]))))
        writer.append(rows)
        written += len(rows)
    write_jsonl(out / "scores.jsonl", rows_s)
    return written, []


def _renorm_many(probs: list[list[float]]) -> list[list[float]]:
    return [[x / (sum(p) or 1.0) for x in p] for p in probs]


def run_score(recipe, inputs: dict[str, Path], out: Path, **_: Any) -> dict:
    """Stage ``score``: inputs ``candidates``, ``judge``, ``data``; writes ``judgments.jsonl`` (+ ``missing.jsonl``,
    ``rejected.jsonl``, and ``scores.jsonl`` in independent mode)."""
    from srcal.scorer.judge import read_judge_meta

    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    judge_dir = Path(inputs["judge"])
    meta = read_judge_meta(judge_dir)
    samples = load_samples(Path(inputs["data"]))
    rejected: list[dict] = []  # unreadable candidate lines (file, line, reason) land here too
    cands = group_candidates(read_jsonl(Path(inputs["candidates"]) / "candidates.jsonl", rejected, missing_ok=True))
    work = []
    for sid, cs in sorted(cands.items()):
        if sid not in samples:
            rejected.append({"id": sid, "reason": "sample not in the data artifact"})
        elif len(cs) < 2:
            rejected.append({"id": sid, "reason": f"only {len(cs)} candidate(s); nothing to compare"})
        elif prompt_chars_problem(samples[sid], recipe.data.max_prompt_chars):  # before any judge prompt
            rejected.append({"id": sid, "reason": prompt_chars_problem(samples[sid], recipe.data.max_prompt_chars)})
        else:
            work.append((sid, samples[sid], cs))
    writer = JudgmentWriter(out)
    if recipe.score.mode == "independent":
        written, missing = score_independent(recipe, judge_dir, work, writer, out)
    else:
        with judge_endpoint(recipe, judge_dir, out) as url:
            judge = make_judge(recipe, judge_dir, url)
            try:
                written, missing = score_pairwise(recipe, judge, meta, work, writer)
            finally:
                if hasattr(judge, "close"):
                    judge.close()
    write_jsonl(out / "missing.jsonl", missing)
    write_jsonl(out / "rejected.jsonl", rejected)
    total = sum(len(pair_schedule(len(c), recipe.score.schedule, recipe.score.max_pairs_per_sample)) for _, _, c in work)
    miss_kinds: dict[str, int] = {}
    for m in missing:
        miss_kinds[m["kind"]] = miss_kinds.get(m["kind"], 0) + 1
    elapsed = time.time() - t0
    return {"counts": {"samples": len(work), "scheduled_pairs": total, "judged_now": written,
                       "resumed": writer.resumed, "missing": len(missing), "rejected_samples": len(rejected)},
            "missing_kinds": miss_kinds, "mode": recipe.score.mode, "serve": recipe.rscorer.serve,
            "pairs_per_s": round(written / elapsed, 2) if elapsed > 0 else None,
            "timings_s": {"score": round(elapsed, 2)}}
