"""Reading R-Scorer's verdicts: in-process (Hugging Face) or from an OpenAI-compatible server (vLLM/KServe).

Both judges answer the same question for a list of prompts — P(A), P(B), P(C) of the verdict token that
follows each prompt — and return, per prompt, either ``[p_A, p_B, p_C]`` or a :class:`srcal.serve.client.Failure`
(never a made-up tie).

* :class:`HFJudge` runs the judge directory in this process. Prompts of one sample share their
  description and question, so the judge computes that **shared prefix once** (one forward, batch 1) and
  runs only the pair-specific suffixes (A, B, the verdict slot) on top of its key/value cache, all pairs
  of a sample in one batch; the verdict is read from the last position's logits of the three label tokens
  (softmax over them), never from generated text. The prefix is the longest common *token* prefix of the
  group's prompts, so the result equals a full forward of each prompt (tested).
* :class:`RemoteJudge` sends one ``/v1/completions`` request per ordered pair with ``max_tokens=1`` and
  vLLM's ``logprob_token_ids`` (the three label ids from the judge's tokenizer), through
  :class:`srcal.serve.client.OpenAIClient` (bounded concurrency, retries with backoff, typed failures). Requests
  go out grouped by sample so the server's prefix cache serves the shared part
  (docs/vllm.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from srcal.scorer import judge_format

log = logging.getLogger("srcal.scorer.judge")

JUDGE_META = "srcal_judge.json"


def read_judge_meta(judge_dir: str | Path) -> dict[str, Any]:
    """The judge's input format, prompt template and label token ids, written by ``rscorer-train``."""
    path = Path(judge_dir) / JUDGE_META
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the judge input must be an rscorer-train output")
    return json.loads(path.read_text())


def _softmax3(logits) -> list[float]:
    import torch

    return torch.softmax(logits.float(), dim=-1).tolist()


def last_position_probs(model, tok, prompts: Sequence[str], label_ids: Sequence[int], batch_size: int = 64
                        ) -> list[list[float]]:
    """Plain batched read (no prefix sharing): right-padded batches, logits at each row's last token."""
    import torch

    out: list[list[float]] = []
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    lab = torch.tensor(list(label_ids))
    with torch.inference_mode():
        for i in range(0, len(prompts), batch_size):
            enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts[i : i + batch_size]]
            n = max(map(len, enc))
            ids = torch.full((len(enc), n), pad, dtype=torch.long)
            att = torch.zeros((len(enc), n), dtype=torch.long)
            for r, e in enumerate(enc):
                ids[r, : len(e)] = torch.tensor(e)
                att[r, : len(e)] = 1
            logits = model(input_ids=ids, attention_mask=att, logits_to_keep=0).logits
            last = att.sum(1) - 1
            out += _softmax3(logits[torch.arange(len(enc)), last][:, lab])
    return out


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix, kept one short of the shortest sequence (a suffix must remain)."""
    n = min(map(len, seqs)) - 1
    first = seqs[0]
    for i in range(max(0, n)):
        if any(s[i] != first[i] for s in seqs[1:]):
            return i
    return max(0, n)


class HFJudge:
    """The judge directory loaded in this process (see module docstring)."""

    def __init__(self, judge_dir: str | Path, *, batch_size: int = 64, threads: int = 0):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.meta = read_judge_meta(judge_dir)
        self.tok = AutoTokenizer.from_pretrained(judge_dir)
        self.model = AutoModelForCausalLM.from_pretrained(judge_dir, dtype=torch.float32).eval()
        self.label_ids = [int(self.meta["label_token_ids"][x]) for x in judge_format.VERDICT_LABELS]
        self.batch_size = batch_size

    def encode(self, prompt: str) -> list[int]:
        return self.tok(prompt, add_special_tokens=False)["input_ids"]

    def read_group(self, prompts: Sequence[str]) -> list[list[float]]:
        """Verdicts for prompts that share a prefix (one sample's pairs): prefix once, suffixes batched."""
        import torch
        from transformers import DynamicCache

        enc = [self.encode(p) for p in prompts]
        k = common_prefix_len(enc) if len(enc) > 1 else 0
        if k < 2:
            return last_position_probs(self.model, self.tok, prompts, self.label_ids, self.batch_size)
        lab = torch.tensor(self.label_ids)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        out: list[list[float]] = []
        with torch.inference_mode():
            pre = self.model(input_ids=torch.tensor([enc[0][:k]]), use_cache=True)
            for i in range(0, len(enc), self.batch_size):
                chunk = [e[k:] for e in enc[i : i + self.batch_size]]
                n, m = max(map(len, chunk)), len(chunk)
                cache = DynamicCache()
                for layer, (key, val) in enumerate(_cache_layers(pre.past_key_values)):
                    cache.update(key.expand(m, -1, -1, -1).contiguous(), val.expand(m, -1, -1, -1).contiguous(), layer)
                ids = torch.full((m, n), pad, dtype=torch.long)
                att = torch.zeros((m, k + n), dtype=torch.long)
                att[:, :k] = 1
                for r, e in enumerate(chunk):
                    ids[r, : len(e)] = torch.tensor(e)
                    att[r, k : k + len(e)] = 1
                pos = torch.arange(k, k + n).unsqueeze(0).expand(m, -1)
                logits = self.model(input_ids=ids, attention_mask=att, past_key_values=cache, position_ids=pos,
                                    use_cache=True).logits
                last = torch.tensor([len(e) - 1 for e in chunk])
                out += _softmax3(logits[torch.arange(m), last][:, lab])
        return out

    def read(self, groups: Sequence[Sequence[str]]) -> list[list[list[float]]]:
        """Verdicts per group of prompts (one group per sample)."""
        return [self.read_group(g) for g in groups]

    def generate_verdict(self, prompt: str, max_new_tokens: int = 4) -> str | None:
        """The naive read: free-text generation, then parse the first label letter (benchmark baseline)."""
        import torch

        ids = torch.tensor([self.encode(prompt)])
        with torch.inference_mode():
            gen = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                      do_sample=False, pad_token_id=self.tok.pad_token_id)
        text = self.tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True)
        return parse_verdict_text(text)


def _cache_layers(past) -> list[tuple[Any, Any]]:
    """(key, value) per layer from a transformers cache object (v5 layers API) or legacy tuples."""
    if hasattr(past, "layers"):
        return [(layer.keys, layer.values) for layer in past.layers]
    return [(k, v) for k, v in past]


def parse_verdict_text(text: str) -> str | None:
    """The first verdict letter in free text (``" A"``, ``"[[B]]"``, ``"C."``), else None."""
    import re

    m = re.search(r"\b([ABC])\b", text)
    return m.group(1) if m else None


class RemoteJudge:
    """The judge behind an OpenAI-compatible endpoint (vLLM / KServe); see module docstring."""

    def __init__(self, url: str, judge_dir: str | Path, *, model: str = "", concurrency: int = 8,
                 timeout_s: float = 30.0, retries: int = 3, api_key: str | None = None):
        from srcal.serve.client import OpenAIClient

        self.meta = read_judge_meta(judge_dir)
        self.label_ids = {k: int(v) for k, v in self.meta["label_token_ids"].items()}
        self.client = OpenAIClient(url, model or "judge", api_key=api_key, concurrency=concurrency,
                                   timeout_s=timeout_s, retries=retries)

    def read_one(self, prompt: str) -> list[float]:
        probs = self.client.verdict(list(judge_format.VERDICT_LABELS), prompt=prompt, label_token_ids=self.label_ids)
        return [probs[x] for x in judge_format.VERDICT_LABELS]

    def read(self, groups: Sequence[Sequence[str]]) -> list[list[Any]]:
        """Verdicts per group; a prompt that failed for good gets its :class:`srcal.serve.client.Failure`."""
        flat = [p for g in groups for p in g]
        results = self.client.map_requests(flat, self.read_one)
        out, i = [], 0
        for g in groups:
            out.append(results[i : i + len(g)])
            i += len(g)
        return out

    def close(self) -> None:
        self.client.close()
