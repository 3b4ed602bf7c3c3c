"""Stage 2 as stages: ``search`` (one shard of a split, resumable) and ``search-merge`` (the shards into
one artifact); see :mod:`srcal.search` for the method."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from srcal.run import jsonl
from srcal.search.beam import SearchParams, beam_search
from srcal.search.candidates import (
    CandidateWriter,
    candidate_record,
    parse_round,
    parse_shard,
    round_seed,
    round_slice,
    shard_slice,
)
from srcal.search.diversity import diversity_report

log = logging.getLogger("srcal.search")


# ------------------------------------------------------------------------------------------- the stage


def load_image(path: Path):
    """The sample's image as RGB, or an exception whose message goes to ``rejected.jsonl``."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def build_engine(recipe, inputs: dict[str, Path], *, batched: bool = True):
    """The engine named by ``search.engine``, loaded with the policy to search from."""
    s = recipe.search
    if s.engine == "hf":
        from srcal.search.engines.hf import HFEngine
        from srcal.models.loading import load_policy, pick_device

        model, processor = load_policy(inputs["base"], inputs.get("policy"), dtype=recipe.model.dtype,
                                       device=pick_device(recipe.device),
                                       attn_implementation=recipe.model.attn_implementation)
        return HFEngine(model, processor, delimiters=s.sentence_delimiters,
                        max_sentence_tokens=s.max_sentence_tokens, temperature=s.temperature, top_p=s.top_p,
                        min_p=s.min_p, batched=batched)
    if s.engine == "vllm":
        from srcal.search.engines.vllm import VLLMEngine

        return VLLMEngine.from_recipe(recipe, inputs)
    raise ValueError(f"search.engine {s.engine!r}: expected 'hf' or 'vllm'")


def search_samples(engine, samples: Sequence[dict], images_root: Path, params: SearchParams, seed: int,
                   batch_size: int, writer: CandidateWriter | None = None) -> tuple[list[dict], list[dict], dict]:
    """Search ``samples`` in lockstep batches; write each finished batch through ``writer`` (if given).

    Returns (candidates, rejected, stats). A sample is rejected (not fatal) when its image does not load
    or its prompt leaves no room for one sentence in the model's context.
    """
    all_c, all_r = [], []
    stats = {"expansions": 0, "generated_tokens": 0, "engine_calls": 0}

    def counted_expand(reqs):
        out = engine.expand(reqs)
        stats["engine_calls"] += 1
        stats["expansions"] += sum(len(o) for o in out)
        stats["generated_tokens"] += sum(len(s.token_ids) for o in out for s in o)
        return out

    for start in range(0, len(samples), batch_size):
        batch = samples[start:start + batch_size]
        prompts, kept, rejected = [], [], []
        for sample in batch:
            try:
                image = load_image(images_root / sample["image"])
            except Exception as e:  # noqa: BLE001 — PIL raises many types; all mean "cannot use this image"
                rejected.append({"sample_id": sample["id"], "reason": f"image failed to load: {type(e).__name__}: {e}"})
                continue
            prompt = engine.prepare(sample, image, image_path=images_root / sample["image"])
            if prompt.n_tokens + params.max_sentence_tokens + 1 > engine.context_len:
                rejected.append({"sample_id": sample["id"], "reason": (
                    f"prompt of {prompt.n_tokens} tokens leaves no room for a {params.max_sentence_tokens}-token "
                    f"sentence in the model's context of {engine.context_len}")})
                continue
            prompts.append(prompt)
            kept.append(sample)
        beams = beam_search(prompts, counted_expand, params, seed, engine.context_len) if prompts else []
        engine.release([p.key for p in prompts])
        cands = [candidate_record(s, b, j, params) for s, bs in zip(kept, beams) for j, b in enumerate(bs)]
        if writer is not None:
            writer.commit(cands, rejected, [s["id"] for s in batch])
        all_c += cands
        all_r += rejected
    return all_c, all_r, stats


def run_search(recipe, inputs: dict[str, Path], out: Path, shard: str = "0/1", split: str = "calib",
               limit: str | None = None, **options: Any) -> dict:
    """Stage ``search``: candidates for one deterministic shard of ``data/<split>.jsonl``.

    With ``round=roundK`` (what ``srcal run`` passes) and ``search.fresh_per_round`` the stage searches
    only round K's slice of the split (:func:`round_slice`) with round K's seed (:func:`round_seed`);
    shards then split that slice. The summary records the slice (``round_slice``) and the seed.

    Inputs: ``policy`` (model artifact of the round; optional: without it the base model searches),
    ``base``, ``data``. Writes ``candidates.jsonl``, ``rejected.jsonl``, ``done.jsonl`` (per-sample
    completion, for resume). A re-run in the same scratch dir continues after the last completed sample;
    an engine failure (e.g. the vLLM worker dying) restarts the engine up to ``search.engine_retries``
    times, from the last completed sample.
    """
    from srcal.data.schema import read_jsonl

    t0 = time.time()
    i, n = parse_shard(shard)
    data_dir = Path(inputs["data"])
    rows, bad_rows = read_jsonl(data_dir / f"{split}.jsonl", max_rejected_share=recipe.data.max_rejected_share,
                                max_prompt_chars=recipe.data.max_prompt_chars)  # before any tokenizer
    k = parse_round(options.get("round"))  # not a parameter named round: it would shadow round()
    split_rows = len(rows)
    rows = round_slice(rows, k, recipe.rounds, recipe.search.fresh_per_round)
    if k is not None and recipe.search.fresh_per_round and not rows:
        from srcal.errors import StageError

        raise StageError(f"search: round {k} has no calibration samples: data.calib_size ({split_rows} rows in "
                         f"{split}) is split over rounds={recipe.rounds} (search.fresh_per_round); raise it")
    slice_ids = [r["id"] for r in rows]
    seed = round_seed(recipe.seed, k if recipe.search.fresh_per_round else None)
    rows = shard_slice(rows, i, n)
    if limit:
        rows = rows[: int(limit)]
    params = SearchParams.from_recipe(recipe)
    writer = CandidateWriter(out)
    resumed = sum(r["id"] in writer.done for r in rows)
    todo = [r for r in rows if r["id"] not in writer.done]
    log.info("search shard %d/%d: %d samples (%d already done), engine %s", i, n, len(rows), resumed,
             recipe.search.engine)
    stats: dict[str, Any] = {}
    n_todo = len(todo)
    t_gen = time.time()
    if todo:
        for attempt in range(recipe.search.engine_retries + 1):
            engine = build_engine(recipe, inputs)
            try:
                todo = [r for r in todo if r["id"] not in writer.done]
                _, _, stats = search_samples(engine, todo, data_dir, params, seed,
                                             recipe.search.batch_size, writer)
                break
            except Exception as e:
                if attempt == recipe.search.engine_retries or not _engine_died(e):
                    raise
                log.warning("search: engine failed (%s); restarting from the last completed sample", e)
            finally:
                engine.close()
    gen_s = time.time() - t_gen
    candidates = writer.candidates()
    samples = {r["id"]: r for r in rows}
    report = diversity_report(samples, candidates, recipe.rap_answer_prefix)
    rejected = writer.rejected()
    if i == 0 and bad_rows:  # every shard reads the whole split: shard 0 alone quarantines its bad rows
        jsonl.write_jsonl(out / INPUT_REJECTED, bad_rows)
    return {
        "shard": f"{i}/{n}",
        "split": split,
        "round_slice": {"round": k, "rounds": recipe.rounds, "fresh": recipe.search.fresh_per_round,
                        "split_rows": split_rows, "slice_rows": len(slice_ids), "seed": seed,
                        "ids_sha256": hashlib.sha256("\n".join(slice_ids).encode()).hexdigest()[:16]},
        "engine": recipe.search.engine,
        "counts": {"samples": len(rows), "resumed": resumed, "searched": n_todo, "candidates": len(candidates),
                   "rejected": len(rejected), "malformed_rows": len(bad_rows)},
        "rejected_reasons": _reason_counts(rejected),
        "diversity": report,
        "finish_reasons": _count(c["finish_reason"] for c in candidates),
        "cut_sentences": sum(c["cut_sentences"] for c in candidates),
        "generation": {**stats, "seconds": round(gen_s, 3)},
        "timings_s": {"search": round(time.time() - t0, 3)},
    }


# Rows of the split that search never started (malformed, over data.max_prompt_chars), with file, line and
# reason; search-merge folds them into its rejected.jsonl, so a run's search artifact accounts for every row.
INPUT_REJECTED = "input_rejected.jsonl"


def _engine_died(e: Exception) -> bool:
    """Failures worth a fresh engine: the vLLM worker died more often than it restarts by itself."""
    from srcal.serve.vllm_worker import WorkerError

    return isinstance(e, WorkerError)


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


def _reason_counts(rejected: list[dict]) -> dict[str, int]:
    return _count(r["reason"].split(":")[0] for r in rejected)


def run_search_merge(recipe, inputs: dict[str, Path], out: Path, split: str | None = None, **_: Any) -> dict:
    """Stage ``search-merge``: concatenate shard outputs (inputs named ``shard0``, ``shard1``, …).

    Shards are merged in index order and each sample may appear in one shard only; a duplicate means
    two shards overlapped (wrong ``shard=i/n``) and fails loudly instead of double-counting. With a
    ``data`` input the summary carries the diversity report of the whole split (correctness included).
    The summary's ``split`` (what curate reads ground truth from) and ``round_slice`` are the shards'
    (``split`` option, else ``calib`` for shards without a summary).
    """
    names = sorted((k for k in inputs if k.startswith("shard")), key=lambda k: int(k[5:] or 0))
    if not names:
        raise ValueError("search-merge: no inputs named shard0, shard1, …")
    first = Path(inputs[names[0]]) / "summary.json"
    shard_summary = json.loads(first.read_text()) if first.exists() else {}
    split = split or shard_summary.get("split") or "calib"
    seen: dict[str, str] = {}
    out.mkdir(parents=True, exist_ok=True)
    merged: list[dict] = []
    rejected: list[dict] = []
    for name in names:
        d = Path(inputs[name])
        owners: set[str] = set()
        for rec in jsonl.read_jsonl(d / "candidates.jsonl", rejected):  # an unreadable line → rejected.jsonl
            sid = rec["sample_id"]
            if seen.get(sid, name) != name:
                raise ValueError(f"search-merge: sample {sid} is in both {seen[sid]} and {name}")
            owners.add(sid)
            merged.append(rec)
        seen.update({s: name for s in owners})
        rejected += jsonl.read_jsonl(d / "rejected.jsonl", rejected, missing_ok=True)
        rejected += jsonl.read_jsonl(d / INPUT_REJECTED, rejected, missing_ok=True)
    n_c, n_r = len(merged), len(rejected)
    jsonl.write_jsonl(out / "candidates.jsonl", merged)
    jsonl.write_jsonl(out / "rejected.jsonl", rejected)
    samples: dict[str, dict] = {}
    if "data" in inputs:
        from srcal.data.schema import read_jsonl

        rows, _ = read_jsonl(Path(inputs["data"]) / f"{split}.jsonl", max_rejected_share=1.0)
        samples = {r["id"]: r for r in rows}
    prefix = recipe.rap_answer_prefix if recipe is not None else "Answer:"
    return {"counts": {"shards": len(names), "samples": len(seen), "candidates": n_c, "rejected": n_r},
            "split": split, "round_slice": shard_summary.get("round_slice"),
            "diversity": diversity_report(samples, merged, prefix),
            "timings_s": shard_timings([Path(inputs[n]) for n in names])}


def shard_timings(dirs: list[Path]) -> dict[str, float]:
    """The shards' own ``timings_s.total`` (their summary.json): ``shards_sum`` (the search work, what a
    local run waits for: shards run one after another) and ``shards_max`` (the wall time of a ParallelFor).
    Without them the merged step's time is the merge's alone, and a sharded search looked free in the
    report (issue 12, bug 5)."""
    import json

    totals = []
    for d in dirs:
        try:
            totals.append(float(json.loads((d / "summary.json").read_text())["timings_s"]["total"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a shard without a summary (not published by stages.execute) adds nothing
    return {"shards_sum": round(sum(totals), 3), "shards_max": round(max(totals, default=0.0), 3)}


