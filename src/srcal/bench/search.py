"""``srcal bench search``: the batched HF engine against one ``generate`` per beam per step, same seeds
(both draw the same candidates), on the tiny recipe's policy or a random-weights real architecture."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from srcal.search.beam import Beam, Expansion, SearchParams, beam_search
from srcal.search.stage import load_image

log = logging.getLogger("srcal.bench.search")


# ------------------------------------------------------------------------------------------- benchmark


def _timed_search(engine, make_prompts: Callable[[], list], params: SearchParams,
                  seed: int) -> tuple[dict, list[list[Beam]]]:
    """Prepare the prompts and search once, timed together (prompt encoding, and for the batched engine
    the once-per-sample image features, are part of the cost): wall time, candidates, tokens."""
    stats = {"expansions": 0, "generated_tokens": 0}

    def counted(reqs):
        out = engine.expand(reqs)
        stats["expansions"] += sum(len(o) for o in out)
        stats["generated_tokens"] += sum(len(s.token_ids) for o in out for s in o)
        return out

    calls0 = engine.generate_calls
    sync = _cuda_sync()
    sync()
    t0 = time.perf_counter()
    prompts = make_prompts()
    beams = beam_search(prompts, counted, params, seed, engine.context_len)
    sync()
    dt = time.perf_counter() - t0
    n_cand = sum(len(b) for b in beams)
    return {
        "seconds": round(dt, 3), "samples": len(prompts), "candidates": n_cand, **stats,
        "generate_calls": engine.generate_calls - calls0,
        "candidates_per_s": round(n_cand / dt, 3), "tokens_per_s": round(stats["generated_tokens"] / dt, 1),
    }, beams


def _cuda_sync():
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.synchronize
    except ImportError:
        pass
    return lambda: None


def _find_run_policy(run_dir: str | None) -> dict[str, Path] | None:
    """``{"base", "policy", "data"}`` of a finished local run (``srcal run`` layout), or None."""
    if not run_dir:
        return None
    root = Path(run_dir)
    base, rft, data = root / "base", root / "rft", root / "data"
    if all((p / "summary.json").exists() for p in (base, rft, data)):
        return {"base": base, "policy": rft, "data": data}
    return None


def _tiny_bench_inputs(recipe, n: int, workdir: Path):
    """A freshly built (random-weight) tiny LLaVA of the recipe's sizes, and ``n`` shapes-world samples
    (2:1:1) with their images: the benchmark's inputs when no trained RFT model is available."""
    from srcal.world import shapes
    from srcal.world.corpus import corpus
    from srcal.models.capabilities import tiny_family
    from srcal.models.loading import load_lvlm
    from srcal.models.tiny import build_tiny_lvlm

    cfg, t = recipe.data.shapes, recipe.model.tiny
    sizes = {"patch_size": t.patch_size, "vision_hidden": t.vision_hidden, "vision_layers": t.vision_layers,
             "text_hidden": t.text_hidden, "text_layers": t.text_layers, "text_heads": t.text_heads}
    model_dir = build_tiny_lvlm(tiny_family(recipe), corpus(cfg, 200, recipe.seed), workdir / "model",
                                image_size=cfg.image_size, vocab_size=t.vocab_size, sizes=sizes, seed=recipe.seed)
    model, proc = load_lvlm(model_dir, dtype="float32", device="cpu")
    counts = {"perception": n - 2 * (n // 4), "chart": n // 4, "math": n // 4}
    pairs = [p for cat, k in counts.items() if k for p in shapes.generate_samples(cfg, k, cat, recipe.seed + 7, f"bench-{cat}")]
    return model, proc, pairs


def bench_search(recipe, arch: str | None = None, random_weights: bool = False, run_dir: str | None = "runs/tiny",
                 samples: str | int = 16, max_sentences: str | int | None = 4, baseline_samples: str | int | None = None,
                 **_: Any) -> dict:
    """``srcal bench search``: the batched HF engine (one ``generate`` per step for all beams) against
    the naive loop (one ``generate`` per beam per step), same model, prompts, seeds and budget.

    Both use the same per-row seeded sampler, so they should draw the *same* candidates; the result
    records the share of samples whose candidates are identical (a correctness check of batching).
    Model: the RFT policy of ``run_dir`` when that run finished its ``rft`` stage, else a freshly built
    random-weight tiny LLaVA (recorded under ``model``). ``--arch`` switches to a real-size architecture.
    """
    import tempfile

    import torch

    from srcal.models.capabilities import tiny_family

    if arch:
        return _bench_search_arch(recipe, arch, random_weights, samples=samples, max_sentences=max_sentences,
                                  baseline_samples=baseline_samples)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    s = recipe.search
    params = SearchParams.from_recipe(recipe)
    if max_sentences:
        params = SearchParams(**{**params.__dict__, "max_sentences": int(max_sentences)})
    n = int(samples)
    found = _find_run_policy(run_dir)
    with tempfile.TemporaryDirectory(prefix="srcal-bench-") as tmp:
        if found:
            from srcal.data.schema import read_jsonl
            from srcal.models.loading import load_policy

            model, proc = load_policy(found["base"], found["policy"], dtype="float32", device="cpu")
            rows, _ = read_jsonl(found["data"] / "calib.jsonl", max_rejected_share=1.0)
            pairs = [(r, load_image(found["data"] / r["image"])) for r in rows[:n]]
            model_note = f"RFT policy of {run_dir}"
        else:
            model, proc, pairs = _tiny_bench_inputs(recipe, n, Path(tmp))
            model_note = (f"tiny {tiny_family(recipe)}, random weights (no finished RFT run at {run_dir!r}): "
                          "untrained, so most sentences run to the per-sentence token limit")
        from srcal.search.engines.hf import HFEngine

        # The naive port also re-encodes the image inside every generate() call (no feature cache).
        engines = {name: HFEngine(model, proc, delimiters=s.sentence_delimiters,
                                  max_sentence_tokens=s.max_sentence_tokens, temperature=s.temperature,
                                  top_p=s.top_p, min_p=s.min_p, batched=batched, cache_image_features=batched)
                   for name, batched in (("baseline", False), ("ours", True))}
        results, outputs = {}, {}
        for name, engine in engines.items():
            engine.expand([Expansion(engine.prepare(*pairs[0]), (), 1, 0)])  # warm-up, not timed
            results[name], outputs[name] = _timed_search(
                engine, lambda e=engine: [e.prepare(sample, image) for sample, image in pairs], params, recipe.seed)
    same = sum([b.text for b in x] == [b.text for b in y] for x, y in zip(outputs["baseline"], outputs["ours"]))
    results["baseline"]["method"] = "naive loop: one generate() per beam per step (K rows each)"
    results["ours"]["method"] = "batched: one generate() per step for all samples × beams × K rows"
    return {
        "model": model_note,
        "params": {**params.__dict__, "samples": n, "temperature": s.temperature, "top_p": s.top_p,
                   "min_p": s.min_p},
        "baseline": results["baseline"], "ours": results["ours"],
        "speedup": round(results["baseline"]["seconds"] / results["ours"]["seconds"], 2),
        "speedup_metric": "wall time at equal inputs, seeds and candidate count",
        "identical_candidates_share": round(same / max(len(pairs), 1), 4),
    }


# Real-size architectures for random-weight benchmarks on a GPU (no checkpoint download needed).
ARCHS: dict[str, dict[str, Any]] = {
    # llava-hf/llava-1.5-7b-hf: CLIP ViT-L/14-336 + Vicuna-7B (Llama-2 dims), 576 image tokens.
    "llava-1.5-7b": {
        "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
                       "image_size": 336, "patch_size": 14, "projection_dim": 768, "hidden_act": "quick_gelu"},
        "text": {"vocab_size": 32064, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096,
                     "rms_norm_eps": 1e-5},
        "image_token_index": 32000, "vision_feature_layer": -2, "text_prompt_tokens": 40,
    },
    # Same code path at toy size, so CI exercises the --arch route on a CPU.
    "llava-test": {
        "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8, "projection_dim": 32, "hidden_act": "quick_gelu"},
        "text": {"vocab_size": 512, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 2048,
                     "rms_norm_eps": 1e-5},
        "image_token_index": 500, "vision_feature_layer": -2, "text_prompt_tokens": 12,
    },
}


def _word_tokenizer(vocab_size: int, eos: int, pad: int):
    """A tokenizer with one plain word per id (``t17``): no sentence delimiters at all, so with random
    weights every sentence runs to the token limit and both engines do exactly the same, fixed work."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=f"t{eos}", pad_token=f"t{pad}", unk_token="t0")


def _bench_search_arch(recipe, arch: str, random_weights: bool, samples, max_sentences, baseline_samples) -> dict:
    """Batched vs naive HF search on a real-size architecture with random weights (bf16 on a GPU).

    The naive loop is slow at this size, so it runs on the first ``baseline_samples`` samples only
    (default 2) and is compared per candidate (rates), which the JSON states. vLLM is not measured here:
    its wheel cannot be carried to our GPU machine.
    """
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from srcal.search.engines.hf import HFEngine

    if not random_weights:
        raise ValueError("--arch needs --random-weights (no checkpoints can be downloaded here)")
    if arch not in ARCHS:
        raise ValueError(f"unknown --arch {arch!r}; known: {sorted(ARCHS)}")
    a = ARCHS[arch]
    from srcal.models.loading import pick_device

    device = pick_device("auto")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    vocab = a["text"]["vocab_size"]
    eos, pad, img = 2, vocab - 1, a["image_token_index"]
    cfg = LlavaConfig(vision_config=CLIPVisionConfig(**a["vision"]),
                      text_config=LlamaConfig(**a["text"], bos_token_id=1, eos_token_id=eos, pad_token_id=pad),
                      image_token_index=img, vision_feature_select_strategy="default",
                      vision_feature_layer=a["vision_feature_layer"], projector_hidden_act="gelu",
                      image_seq_length=(a["vision"]["image_size"] // a["vision"]["patch_size"]) ** 2)
    torch.manual_seed(recipe.seed)
    t0 = time.perf_counter()
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(cfg)
    finally:
        torch.set_default_dtype(old)
    model.eval()
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = eos, pad
    build_s = time.perf_counter() - t0
    tok = _word_tokenizer(vocab, eos, pad)
    s = recipe.search
    params = SearchParams.from_recipe(recipe)
    params = SearchParams(**{**params.__dict__, "max_sentences": int(max_sentences or params.max_sentences)})
    n, n_base = int(samples), int(baseline_samples or 2)
    g = torch.Generator().manual_seed(recipe.seed)
    size = a["vision"]["image_size"]
    inputs = []
    for i in range(n):
        text = torch.randint(3, img, (a["text_prompt_tokens"],), generator=g).tolist()
        ids = [1] + [img] * cfg.image_seq_length + text
        inputs.append((f"rand-{i:04d}", ids, {"pixel_values": torch.randn(1, 3, size, size, generator=g)}))
    results = {}
    for name, batched, k in (("baseline", False, n_base), ("ours", True, n)):
        engine = HFEngine(model, tok, delimiters=s.sentence_delimiters, max_sentence_tokens=s.max_sentence_tokens,
                          temperature=s.temperature, top_p=s.top_p, min_p=s.min_p, batched=batched)
        engine.cache_features = batched  # the naive port re-encodes the image in every generate() call

        def make(engine=engine, k=k):
            return [engine.prompt_from_ids(key, ids, {k2: v.to(device, dtype) for k2, v in vis.items()})
                    for key, ids, vis in inputs[:k]]

        engine.expand([Expansion(make()[0], (), 1, 0)])  # warm-up (kernels, allocator), not timed
        results[name], _ = _timed_search(engine, make, params, recipe.seed)
        if device == "cuda":
            results[name]["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    results["baseline"]["method"] = f"naive loop: one generate() per beam per step; first {n_base} samples only"
    results["ours"]["method"] = "batched: one generate() per step for all samples × beams × K rows"
    return {
        "model": f"{arch} architecture, random weights, {str(dtype).replace('torch.', '')}, {device}",
        "params": {**params.__dict__, "samples": n, "baseline_samples": n_base,
                   "prompt_tokens": len(inputs[0][1]), "n_params": sum(p.numel() for p in model.parameters()),
                   "build_s": round(build_s, 1)},
        "baseline": results["baseline"], "ours": results["ours"],
        "speedup": round(results["ours"]["candidates_per_s"] / results["baseline"]["candidates_per_s"], 2),
        "speedup_metric": "candidates per second (baseline on a subset of the samples)",
        "output_tokens_per_s": results["ours"]["tokens_per_s"],
        "anchor": "published: ~5-6k output tok/s for 8B models on one H100 with vLLM",
        "vllm": "not measured on the GPU machine: the vLLM wheel cannot be carried there",
    }
