"""The Hugging Face engine of sentence-level search: every beam of every sample in ONE ``generate`` per step.

Why it is fast (against the naive port of research code, e.g. LLaVA-CoT's one ``generate`` per
candidate; docs/benchmarks.md): all rows (samples × beams × K) are left-padded into one batch, so the per-call
overhead and the weight reads of each decode step are shared; rows stop independently at their sentence
end (a vectorised stopping criterion over :class:`srcal.search.sentences.TokenTable`), and the call ends when the
slowest row does. For LLaVA, the image features are computed once per sample in :meth:`prepare` and
scattered into ``inputs_embeds`` for every row and step, instead of running the vision tower per row.

Sampling is ours, not ``generate``'s: a logits processor draws each row's token with its own
``torch.Generator`` seeded from (sample, step, beam, child) (Gumbel-max over the temperature/top-p
distribution) and hands ``generate`` a one-hot score (greedy then picks it). That makes a row's tokens
a function of its seed alone — not of which other rows share the batch — so the batched engine and the
naive loop (``batched=False``) draw the same candidates, and shards/resumes are reproducible. The
processor also records the *raw* log-probability (temperature 1, before top-p) of each chosen token,
the same quantity vLLM reports by default (``logprobs_mode="raw_logprobs"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from srcal.search.beam import Expansion, Sentence
from srcal.search.sentences import build_token_table, expansion_seed, find_sentence_end, token_texts


@dataclass
class HFPrompt:
    """A sample's prompt, ready to extend: token ids and its vision inputs (or cached features)."""

    key: str
    ids: list[int]
    vision: dict[str, Any] = field(default_factory=dict)  # processor tensors other than ids/mask
    features: Any = None  # LLaVA: (n_image_tokens, hidden) projected image features, computed once

    @property
    def n_tokens(self) -> int:
        return len(self.ids)


def decode_continuation(tokenizer, anchor: int, anchor_text: str, ids: list[int]) -> str:
    """Text of ``ids`` as a *continuation* (keeps a leading space that ``decode`` alone would drop)."""
    if not ids:
        return ""
    text = tokenizer.decode([anchor, *ids], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return text.removeprefix(anchor_text)


class _SeededSampler:
    """LogitsProcessor: per-row seeded sampling (temperature, top-p); records raw chosen log-probs."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, device, min_p: float = 0.0):
        import torch

        self.gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.temperature, self.top_p, self.min_p = temperature, top_p, min_p
        self.logprobs: list[Any] = []

    def __call__(self, input_ids, scores):
        import torch

        scores = scores.float()
        raw = torch.log_softmax(scores, dim=-1)
        if self.temperature <= 0:
            choice = scores.argmax(-1)
        else:
            logp = torch.log_softmax(scores / self.temperature, dim=-1)
            if self.min_p > 0:  # vLLM's min_p: relative to the top token, after temperature
                cutoff = logp.max(-1, keepdim=True).values + math.log(self.min_p)
                logp = logp.masked_fill(logp < cutoff, float("-inf"))
            if self.top_p < 1.0:
                sorted_lp, idx = logp.sort(-1, descending=True)
                # drop a token when the mass of the strictly better ones already reaches top_p
                drop = (sorted_lp.exp().cumsum(-1) - sorted_lp.exp()) >= self.top_p
                logp = logp.scatter(-1, idx, sorted_lp.masked_fill(drop, float("-inf")))
            u = torch.stack([torch.rand(scores.shape[-1], generator=g, device=scores.device) for g in self.gens])
            gumbel = -torch.log(-torch.log(u.clamp_min(1e-20)))
            choice = (logp + gumbel).argmax(-1)
        self.logprobs.append(raw.gather(1, choice[:, None]).squeeze(1))
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(scores.shape[0], device=scores.device), choice] = 0.0
        return out


class _SentenceEnd:
    """StoppingCriteria: per row, True once the generated tokens contain a sentence end (vectorised
    form of :func:`srcal.search.sentences.find_sentence_end`, which then decides exactly where to cut)."""

    def __init__(self, flags: dict[str, Any]):
        self.f = flags
        self.start: int | None = None

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if self.start is None:  # first call comes after the first new token
            self.start = input_ids.shape[1] - 1
        gen = input_ids[:, self.start:]
        last = gen[:, -1]
        before = self.f["content"][gen[:, :-1]].any(-1) if gen.shape[1] > 1 else torch.zeros_like(last, dtype=torch.bool)
        stop = self.f["inner_end"][last] & (self.f["content"][last] | before)
        if gen.shape[1] >= 2:
            stop |= self.f["tail_delim"][gen[:, -2]] & self.f["head_space"][last]
        return stop


class HFEngine:
    """Sentence expansion with ``transformers`` ``generate``; ``batched=False`` is the naive loop."""

    def __init__(self, model, processor, *, delimiters, max_sentence_tokens: int, temperature: float = 1.0,
                 top_p: float = 1.0, min_p: float = 0.0, batched: bool = True, cache_image_features: bool = True):
        import torch

        from srcal.models.capabilities import image_token_id, of_loaded_or_none

        self.model, self.processor = model, processor
        self.tok = getattr(processor, "tokenizer", processor)
        self.max_sentence_tokens, self.temperature, self.top_p = max_sentence_tokens, temperature, top_p
        self.min_p = min_p
        self.batched = batched
        self.device = next(model.parameters()).device
        gen_eos = model.generation_config.eos_token_id
        eos = set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
        if self.tok.eos_token_id is not None:
            eos.add(self.tok.eos_token_id)
        self.eos_ids = sorted(eos)
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.eos_ids[0]
        texts = token_texts(self.tok)
        vocab = model.get_output_embeddings().weight.shape[0]
        texts += [""] * (vocab - len(texts))  # embedding rows padded beyond the tokenizer
        self.table = build_token_table(texts, delimiters, self.eos_ids)
        self.flags = {k: torch.tensor(getattr(self.table, k), dtype=torch.bool, device=self.device)
                      for k in ("inner_end", "tail_delim", "head_space", "content")}
        self.anchor = self.tok("a", add_special_tokens=False)["input_ids"][-1]
        self.anchor_text = self.tok.decode([self.anchor], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        text_cfg = model.config.get_text_config()
        self.context_len = int(getattr(text_cfg, "max_position_embeddings", 4096))
        self.image_token_id = image_token_id(model.config)
        caps = of_loaded_or_none(model)  # None: a text-only model (the cross-check against vLLM)
        self.cache_features = (cache_image_features and caps is not None and caps.cache_image_features
                               and hasattr(model, "get_image_features"))
        self.generate_calls = 0

    # -- prompts ----------------------------------------------------------------------------------

    def prepare(self, sample: dict, image, image_path=None) -> HFPrompt:
        """Render the plain-question chat prompt (no format instruction: the RFT model must produce RAPs
        unprompted) and encode it; LLaVA's image features are computed here, once per sample. A text-only
        model (``processor`` is a tokenizer: the engine cross-checks against vLLM) gets the question alone."""
        from srcal.models.loading import plain_question_messages, question_text

        if not hasattr(self.processor, "image_processor"):
            messages = [{"role": "user", "content": question_text(sample["question"], sample.get("choices"))}]
            ids = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
            return HFPrompt(sample["id"], list(ids))
        messages = plain_question_messages(sample["question"], sample.get("choices"))
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        enc = self.processor(images=[image], text=[text], return_tensors="pt")
        vision = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
        return self.prompt_from_ids(sample["id"], enc["input_ids"][0].tolist(), vision)

    def prompt_from_ids(self, key: str, ids: list[int], vision: dict[str, Any]) -> HFPrompt:
        """A prompt from token ids and processor tensors; for LLaVA the image features are computed here,
        once (the random-weight benchmark also builds ids directly: no real tokenizer there)."""
        import torch

        prompt = HFPrompt(key, list(ids), dict(vision))
        if self.cache_features and vision:
            with torch.inference_mode():
                out = self.model.get_image_features(pixel_values=vision["pixel_values"].to(self.device, self.model.dtype))
            feats = out.pooler_output if hasattr(out, "pooler_output") else out
            prompt.features = torch.cat(list(feats), dim=0)
            prompt.vision = {}
        return prompt

    def release(self, keys) -> None:
        """Nothing is held across batches (prompts carry their own tensors)."""

    def close(self) -> None:
        pass

    # -- expansion --------------------------------------------------------------------------------

    def expand(self, requests: list[Expansion]) -> list[list[Sentence]]:
        rows = [(r.prompt, r.prefix_ids, expansion_seed(r.seed, r.prompt.key, 0, 0, k))
                for r in requests for k in range(r.n)]
        if self.batched:
            flat = self._generate(rows)
        else:  # the naive loop: one generate call per beam (its K children as K rows)
            flat = []
            start = 0
            for r in requests:
                flat += self._generate(rows[start:start + r.n])
                start += r.n
        out, start = [], 0
        for r in requests:
            out.append(flat[start:start + r.n])
            start += r.n
        return out

    def _generate(self, rows: list[tuple[HFPrompt, tuple[int, ...], int]]) -> list[Sentence]:
        """One ``generate`` call for ``rows`` of (prompt, prefix ids, seed): a sentence per row."""
        import torch

        seqs = [p.ids + list(prefix) for p, prefix, _ in rows]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        sampler = _SeededSampler([seed for _, _, seed in rows], self.temperature, self.top_p, self.device, self.min_p)
        kwargs: dict[str, Any] = {
            "attention_mask": mask, "max_new_tokens": self.max_sentence_tokens + 1, "do_sample": False,
            "logits_processor": [sampler], "stopping_criteria": [_SentenceEnd(self.flags)],
            "pad_token_id": self.pad_id, "eos_token_id": self.eos_ids, "use_cache": True,
            "num_beams": 1, "temperature": None, "top_p": None, "top_k": None,
            # a sampled image token would enter the next step's prefix and break the image-feature
            # scatter ("Number of elements of source < number of ones in mask"); never generate it
            "suppress_tokens": [self.image_token_id] if self.image_token_id is not None else None,
        }
        with torch.inference_mode():
            if self.cache_features:
                embeds = self.model.get_input_embeddings()(ids)
                feats = torch.stack([p.features for p, _, _ in rows]).to(embeds.dtype)
                img_mask = (ids == self.image_token_id).unsqueeze(-1).expand_as(embeds)
                embeds = embeds.masked_scatter(img_mask, feats)
                out = self.model.generate(inputs_embeds=embeds, **kwargs)
                new = out  # with inputs_embeds only, generate returns just the new tokens
            else:
                kwargs.update(self._vision_batch(rows, width))
                out = self.model.generate(input_ids=ids, **kwargs)
                new = out[:, width:]
        self.generate_calls += 1
        logprobs = torch.stack(sampler.logprobs, dim=1).float().cpu() if sampler.logprobs else None
        sentences = []
        for i, row in enumerate(new.cpu().tolist()):
            n_keep, end = find_sentence_end(row, self.table, self.max_sentence_tokens)
            kept = row[:n_keep]
            lps = logprobs[i, :n_keep].tolist() if logprobs is not None else []
            sentences.append(Sentence(kept, lps, decode_continuation(self.tok, self.anchor, self.anchor_text, kept), end))
        return sentences

    def _vision_batch(self, rows, width: int) -> dict[str, Any]:
        """Processor tensors for each row, stacked; per-token ones (e.g. ``mm_token_type_ids``) are padded
        and extended like ``input_ids``.

        Rows are concatenated along dim 0 (Qwen-VL's flattened patches have a different length per image
        and are meant to be). Where per-sample tensors differ in a later dim — LLaVA-NeXT's anyres
        ``pixel_values`` (1, n_tiles, 3, H, W), whose tile count depends on the aspect ratio — they are
        zero-padded to the largest, as ``LlavaNextProcessor`` pads a batch: the model cuts each image's
        tiles back out using ``image_sizes``.
        """
        import torch
        import torch.nn.functional as F

        out: dict[str, Any] = {}
        keys = rows[0][0].vision.keys()
        for k in keys:
            parts = []
            for p, prefix, _ in rows:
                v = p.vision[k]
                if v.dim() == 2 and v.shape[-1] == len(p.ids) and k.endswith("type_ids"):
                    total = len(p.ids) + len(prefix)
                    row = torch.zeros((1, width), dtype=v.dtype)
                    row[0, width - total: width - len(prefix)] = v[0]
                    v = row
                parts.append(v)
            if len({tuple(v.shape[1:]) for v in parts}) > 1:
                dims = parts[0].dim()
                big = [max(v.shape[d] for v in parts) for d in range(1, dims)]
                # F.pad takes (last dim before, after, second-to-last ...): pad only "after"
                parts = [F.pad(v, [x for d in reversed(range(1, dims)) for x in (0, big[d - 1] - v.shape[d])])
                         for v in parts]
            t = torch.cat(parts, dim=0).to(self.device)
            out[k] = t.to(self.model.dtype) if t.is_floating_point() else t
        return out
