"""The vLLM engine of sentence-level search: offline ``vllm.LLM`` in its own virtualenv, over JSONL.

vLLM cannot share the training env (it pins its own torch/transformers, docs/vllm.md), so the engine
talks to :class:`srcal.serve.vllm_worker.VllmWorker` (a long-lived ``vllm.LLM`` in ``.venv-vllm`` or the vLLM
image). What it does (docs/vllm.md):

* **token-id prompts**: the beam's prefix is the chosen sentences' *token ids* appended to the prompt's
  ids — never re-tokenised text, so there is no BPE drift at sentence joins and the prefix cache hits;
* one request per beam with ``n = K`` (the prefix is prefilled once and forked K ways) and a **distinct
  seed per (sample, step, beam)** (one seed shared across requests gives identical samples);
* stop strings ``". "``/``".\\n"`` … (a bare ``"."`` would split ``3.5``), then the shared
  :func:`srcal.search.sentences.find_sentence_end` cuts at exactly the same token as the HF engine would;
* the round's LoRA adapter as a ``LoRARequest`` (the worker gives each adapter path its own int id, so a
  new round's adapter is never served from a stale cache); earlier rounds' adapters are merged into the
  served base once per round (vLLM applies one LoRA per request);
* images passed by path with a stable uuid (the worker hashes the file) so vLLM's multimodal and prefix
  caches are reused across the steps of a sample.

Multimodal models need a vLLM build with torchvision (GPU image, or the CPU multimodal venv of docs/vllm.md);
the CPU venv of scripts/install_vllm_cpu.sh serves text models, which is what the tests use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srcal.search.beam import Expansion, Sentence
from srcal.search.sentences import build_token_table, find_sentence_end, token_texts

log = logging.getLogger("srcal.search.engines.vllm")


@dataclass
class VLLMPrompt:
    """``ids`` as vLLM takes them: one image placeholder token, which vLLM's own multimodal processor
    expands to the image's feature size (it expands every placeholder of a token prompt, so ids the HF
    processor already expanded would be expanded again: 599 → ~1,180 tokens for LLaVA-1.5).
    ``image_tokens``: how many more tokens the expansion adds, so ``n_tokens`` is the length the model
    sees, which the context checks of the beam search need."""

    key: str
    ids: list[int]
    image: str | None = None  # path the worker loads; None for text-only models
    image_tokens: int = 0

    @property
    def n_tokens(self) -> int:
        return len(self.ids) + self.image_tokens


def stop_strings(delimiters) -> list[str]:
    """vLLM stop strings for our sentence rule: whitespace delimiters as they are, others only when
    followed by whitespace (so ``3.5`` never stops); the exact cut is re-derived from token ids."""
    out = []
    for d in delimiters:
        if d and not d.strip():
            out.append(d)
        elif d:
            out += [f"{d} ", f"{d}\n"]
    return out


def prompt_ids(processor, sample: dict, image=None) -> tuple[list[int], int]:
    """Token ids of the plain-question chat prompt with the image placeholder *not* expanded (vLLM expands
    it), and how many tokens the expansion adds (the HF processor's expanded length minus ours).

    The ids are the tokenizer's encoding of the rendered template, which is what the HF processor encodes
    after it has repeated the placeholder (BOS included where the tokenizer adds one)."""
    from srcal.models.loading import plain_question_messages, question_text

    tok = getattr(processor, "tokenizer", processor)
    if image is None or not hasattr(processor, "image_processor"):
        messages = [{"role": "user", "content": question_text(sample["question"], sample.get("choices"))}]
        return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False), 0
    messages = plain_question_messages(sample["question"], sample.get("choices"))
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tok(text)["input_ids"]
    expanded = processor(images=[image], text=[text], return_tensors="pt")["input_ids"][0]
    return list(ids), int(expanded.shape[0]) - len(ids)


class VLLMEngine:
    """Sentence expansion through a :class:`srcal.serve.vllm_worker.VllmWorker` (one batch per step)."""

    def __init__(self, worker, processor, *, delimiters, max_sentence_tokens: int, temperature: float = 1.0,
                 top_p: float = 1.0, min_p: float = 0.0, lora_path: str | None = None, context_len: int | None = None,
                 eos_ids: list[int] | None = None, multimodal: bool = True):
        self.worker, self.processor = worker, processor
        self.tok = getattr(processor, "tokenizer", processor)
        self.max_sentence_tokens, self.temperature, self.top_p = max_sentence_tokens, temperature, top_p
        self.min_p = min_p
        self.lora_path = str(lora_path) if lora_path else None
        eos = set(eos_ids or [])
        if self.tok.eos_token_id is not None:
            eos.add(self.tok.eos_token_id)
        self.table = build_token_table(token_texts(self.tok), delimiters, sorted(eos))
        self.stop = stop_strings(delimiters)
        self.multimodal = multimodal and hasattr(processor, "image_processor")
        if not getattr(worker, "info", None):
            worker.start()
        self.context_len = int(context_len or worker.info.get("max_model_len") or 2048)
        self.generate_calls = 0

    @classmethod
    def from_recipe(cls, recipe, inputs: dict[str, Path]) -> VLLMEngine:
        """Start a worker serving the round's policy: base (+ earlier adapters merged) + top LoRA."""
        from srcal.models.capabilities import for_model_dir
        from srcal.models.loading import has_adapter, load_processor, pick_device, read_meta, resolve_base
        from srcal.serve.vllm_env import prepare_model_for_vllm
        from srcal.serve.vllm_worker import VllmWorker

        s = recipe.search
        base = resolve_base(inputs["base"])
        policy = inputs.get("policy")
        model_dir, lora = str(base), None
        if policy is not None:
            meta = read_meta(policy)
            if meta.get("stack"):
                model_dir = str(_merged_stack(recipe, inputs))
            lora = str(policy) if has_adapter(policy) else None
        if (Path(model_dir) / "config.json").exists():  # a local checkpoint (not a hub id)
            # one that transformers saved (a shrunken or tiny base, the merged stack of rounds ≥ 2) names the
            # LLaVA vision tower in a way vLLM cannot load: serve a renamed copy (srcal.serve.vllm_env)
            model_dir = str(prepare_model_for_vllm(model_dir))
        on_gpu = pick_device(recipe.device) == "cuda"
        args: dict[str, Any] = {"model": model_dir, "dtype": recipe.model.dtype, "seed": recipe.seed,
                                "enforce_eager": not on_gpu, "enable_prefix_caching": True}
        if s.vllm_max_model_len:
            args["max_model_len"] = s.vllm_max_model_len
        if lora:
            args.update(enable_lora=True, max_lora_rank=vllm_lora_rank(lora, s.vllm_max_lora_rank), max_loras=1)
        if on_gpu:
            args.update(gpu_memory_utilization=s.vllm_gpu_memory_utilization,
                        tensor_parallel_size=s.vllm_tensor_parallel)
        caps = for_model_dir(base, family=recipe.model.family)  # every supported family is image-text-to-text
        if lora and not caps.vllm_lora:
            raise RuntimeError(f"vLLM cannot serve {caps.model_type!r} with a LoRA adapter; set search.engine=hf")
        args["limit_mm_per_prompt"] = {"image": 1}
        worker = VllmWorker(args)
        processor = load_processor(policy if policy is not None and (Path(policy) / "tokenizer_config.json").exists()
                                   else base)
        return cls(worker, processor, delimiters=s.sentence_delimiters, max_sentence_tokens=s.max_sentence_tokens,
                   temperature=s.temperature, top_p=s.top_p, min_p=s.min_p, lora_path=lora)

    def prepare(self, sample: dict, image, image_path: str | Path | None = None) -> VLLMPrompt:
        ids, image_tokens = prompt_ids(self.processor, sample, image if self.multimodal else None)
        return VLLMPrompt(sample["id"], list(ids), str(image_path) if (self.multimodal and image_path) else None,
                          image_tokens)

    def release(self, keys) -> None:
        pass

    def close(self) -> None:
        self.worker.close()

    def expand(self, requests: list[Expansion]) -> list[list[Sentence]]:
        batch = []
        for r in requests:
            req: dict[str, Any] = {
                "prompt_token_ids": list(r.prompt.ids) + list(r.prefix_ids), "n": r.n, "seed": r.seed,
                "temperature": self.temperature, "top_p": self.top_p, "min_p": self.min_p,
                "max_tokens": self.max_sentence_tokens + 1,  # +1: the look-ahead token of a "."
                "stop": self.stop, "include_stop_str_in_output": True, "logprobs": 1,
            }
            if r.prompt.image:
                req["image"] = r.prompt.image
            if self.lora_path:
                req["lora_path"] = self.lora_path
            batch.append(req)
        results = self.worker.generate(batch)
        self.generate_calls += 1
        out = []
        for r, res in zip(requests, results):
            if "error" in res:
                raise RuntimeError(f"vLLM rejected the expansion of sample {r.prompt.key}: {res['error']}")
            sentences = []
            for o in res["outputs"]:
                ids = list(o["token_ids"])
                stopped = o.get("finish_reason") == "stop" and isinstance(o.get("stop_reason"), str)
                n_keep, end = find_sentence_end(ids, self.table, self.max_sentence_tokens, stopped=stopped)
                lps = [float(x) if x is not None else 0.0 for x in (o.get("logprobs") or [])][:n_keep]
                text = _continuation(self.tok, ids[:n_keep])
                sentences.append(Sentence(ids[:n_keep], lps, text, end))
            out.append(sentences)
        return out


# The max_lora_rank values vLLM 0.32 accepts (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_lora_rank(adapter_dir: str | Path, floor: int) -> int:
    """The ``max_lora_rank`` to start vLLM with: the smallest rank vLLM accepts that is at least the adapter's
    ``r`` and ``search.vllm_max_lora_rank``. Without it a real recipe failed at round 2's search, after
    hours of work: its align adapters have r = 256 (the paper's), the search default was 64, and vLLM
    refuses an adapter above its max_lora_rank only when the first request arrives."""
    import json

    r = int(json.loads((Path(adapter_dir) / "adapter_config.json").read_text()).get("r") or 0)
    need = max(r, floor)
    for rank in VLLM_LORA_RANKS:
        if rank >= need:
            return rank
    raise ValueError(f"LoRA rank {need} of {adapter_dir} is above what vLLM serves ({VLLM_LORA_RANKS[-1]}); "
                     "lower rft.lora.r / align.lora.r or set search.engine=hf")


def _continuation(tok, ids: list[int]) -> str:
    from srcal.search.engines.hf import decode_continuation

    anchor = tok("a", add_special_tokens=False)["input_ids"][-1]
    base = tok.decode([anchor], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return decode_continuation(tok, anchor, base, ids)


def _merged_stack(recipe, inputs: dict[str, Path]) -> Path:
    """Base with the policy's *stacked* (earlier-round) adapters merged, saved once next to the inputs'
    cache, so vLLM serves it as the base and applies only this round's adapter as a LoRA."""
    import hashlib

    from srcal.models.loading import load_policy, read_meta

    policy = Path(inputs["policy"])
    key = hashlib.sha256(f"{inputs['base']}|{policy}|{read_meta(policy).get('stack')}".encode()).hexdigest()[:12]
    out = policy.parent / f".vllm-base-{key}"
    if (out / "config.json").exists():
        return out
    model, proc = load_policy(inputs["base"], None, dtype=recipe.model.dtype, device="cpu")
    from srcal.models.loading import merge_adapter

    for name in read_meta(policy).get("stack", []):
        model = merge_adapter(model, policy / "stack" / name)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    proc.save_pretrained(tmp)
    tmp.rename(out)
    return out
