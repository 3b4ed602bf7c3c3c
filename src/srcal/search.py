"""Stage 2: sentence-level beam search for diverse rationale candidates (SRC §3.2; CSR, NeurIPS 2024).

The paper branches the RFT model's output at sentence boundaries, so that candidates differ in their
*reasoning path*, not in phrasing; the candidates then go to pairwise scoring (stage 3). It publishes no
code, so the search is ours, with CSR's defaults (5 beams, ≤ 70 tokens per sentence). Per sample:

1. keep up to B beams (partial rationales), starting from the empty response;
2. at each step expand every unfinished beam into K sampled next *sentences* (engine call, below);
3. score each child by its cumulative token log-probability (optionally the per-token mean);
4. drop children whose text repeats another's (identical prefixes), move finished ones (answer line,
   EOS, sentence budget, context) to the finished pool, and keep B of the rest by ``keep_rule``:
   ``top`` = the B best, ``top_bottom`` = the best ⌈B/2⌉ and the worst ⌊B/2⌋ (CSR), which keeps
   weak-but-plausible paths alive so that preference pairs have a rejected side;
5. at the end pick N candidates from the finished pool by the same rule.

Engines (``srcal.engines``) only turn "these prefixes, K sentences each, these seeds" into sentences:
one call per step for *all* beams of all samples in the batch (:func:`beam_search`), so the HF engine
makes one ``generate`` per step and the vLLM engine one ``LLM.generate``. Everything here above the
engine is pure Python and unit-tested with a fake engine.

What a sentence is, exactly (shared by both engines through :class:`TokenTable`): a sentence ends at a
token that contains a delimiter followed by whitespace (``".\\n"``, ``"?\\n"``) or a whitespace delimiter
(``"\\n"``) after some content, or at a delimiter token (``"."``) *followed by* a token that starts with
whitespace or EOS. That one-token look-ahead is what keeps ``3.5`` in one sentence (notes §4 lesson 2:
plain ``"."`` stop strings split decimals); the look-ahead token is dropped and re-sampled as the next
sentence's first token, so sentence token ids always concatenate to exactly the generated sequence.
Abbreviations (``e.g. the``) still split: a known, accepted limitation. A sentence that reaches
``max_sentence_tokens`` without an end is cut there and marked (``end == "cut"``).

Determinism: the randomness of each expansion is a pure function of (round seed, sample id, step, beam
index) (:func:`expansion_seed`), never of the batch it happens to run in, so shards, batch sizes and
resumed runs give the same candidates (up to floating-point differences of padding).

Fresh signal per round (``search.fresh_per_round``, default on): round k of R searches only its own
slice of the calibration split — every R-th sample from k − 1, disjoint across rounds — with a seed of
its own (:func:`round_slice`, :func:`round_seed`), so no round re-mines the samples an earlier round
already trained on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srcal import jsonl

log = logging.getLogger("srcal.search")

END_DELIMITER, END_EOS, END_CUT = "delimiter", "eos", "cut"
FINISH_ANSWER, FINISH_EOS, FINISH_MAX, FINISH_CONTEXT = "answer", "eos", "max_sentences", "context"


# ------------------------------------------------------------------------------------ sentence boundaries


@dataclass(frozen=True)
class TokenTable:
    """Per-token facts the sentence-end rule needs, indexed by token id (computed once per tokenizer).

    ``inner_end``: the token itself closes a sentence (a delimiter followed by whitespace inside it, or a
    whitespace delimiter such as ``\\n``); ``tail_delim``: it ends with a non-whitespace delimiter, so the
    *next* token decides; ``head_space``: it starts with whitespace; ``content``: it has a visible char.
    """

    inner_end: tuple[bool, ...]
    tail_delim: tuple[bool, ...]
    head_space: tuple[bool, ...]
    content: tuple[bool, ...]
    eos_ids: frozenset[int]


def build_token_table(texts: Sequence[str], delimiters: Sequence[str], eos_ids: Sequence[int]) -> TokenTable:
    """Classify every token text (``texts[i]`` = decoded text of token id ``i``) for the sentence rule."""
    hard = [d for d in delimiters if d and not d.strip()]  # whitespace delimiters: "\n"
    soft = [d for d in delimiters if d.strip()]  # ".", "?", "!": need whitespace after them
    inner, tail, head, content = [], [], [], []
    for t in texts:
        inner.append(any(h in t for h in hard) or any(f"{d}{w}" in t for d in soft for w in (" ", "\n", "\t")))
        tail.append(any(t.endswith(d) for d in soft))
        head.append(bool(t) and t[0].isspace())
        content.append(bool(t.strip()))
    return TokenTable(tuple(inner), tuple(tail), tuple(head), tuple(content), frozenset(int(i) for i in eos_ids))


def token_texts(tokenizer) -> list[str]:
    """The text each token id contributes *inside* a sequence, leading space included.

    ``decode([id])`` drops the leading space of SentencePiece tokens (``▁The`` → ``The``), which would
    hide sentence starts; decoding after an anchor token and removing the anchor's text keeps it.
    """
    vocab = len(tokenizer)
    anchor = tokenizer("a", add_special_tokens=False)["input_ids"][-1]
    base = tokenizer.decode([anchor], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    pairs = tokenizer.batch_decode([[anchor, i] for i in range(vocab)], skip_special_tokens=False,
                                   clean_up_tokenization_spaces=False)
    return [p.removeprefix(base) for p in pairs]


def find_sentence_end(token_ids: Sequence[int], table: TokenTable, max_tokens: int,
                      stopped: bool = False) -> tuple[int, str]:
    """Where the first sentence in ``token_ids`` (freshly generated tokens) ends.

    Returns ``(n_keep, end)``: keep ``token_ids[:n_keep]``; ``end`` is ``"eos"`` (EOS at ``n_keep``, the
    beam is finished), ``"delimiter"`` or ``"cut"`` (no end within ``max_tokens``). Engines generate
    ``max_tokens + 1`` tokens so the look-ahead of a delimiter in the last allowed slot is visible; a
    delimiter in that slot with no look-ahead at all counts as an end. ``stopped``: the engine itself
    stopped on a stop string (vLLM), so a short output with no end by our rule still is one sentence.
    """
    seen_content = False
    for t, tid in enumerate(token_ids[: max_tokens + 1]):
        if tid in table.eos_ids:
            return t, END_EOS
        if t < max_tokens and table.inner_end[tid] and (seen_content or table.content[tid]):
            return t + 1, END_DELIMITER
        if t >= 1 and table.tail_delim[token_ids[t - 1]] and table.head_space[tid]:
            return t, END_DELIMITER
        seen_content = seen_content or table.content[tid]
    n = min(len(token_ids), max_tokens)
    if len(token_ids) <= max_tokens and n > 0 and (stopped or table.tail_delim[token_ids[n - 1]]):
        return n, END_DELIMITER
    return n, END_CUT


# ----------------------------------------------------------------------------------------------- seeds


def expansion_seed(master: int, sample_id: str, step: int, beam: int, child: int | None = None) -> int:
    """A seed for expanding beam ``beam`` of ``sample_id`` at ``step`` (and, per row engines, ``child``).

    Hash-derived so that it depends on nothing else (batch, shard, resume point), and distinct per
    (sample, step, beam): notes §0.9 found that one seed shared across requests gives identical "diverse"
    samples. Kept below 2³¹ so every engine (torch generators, vLLM) accepts it.
    """
    key = f"{master}:{sample_id}:{step}:{beam}" + ("" if child is None else f":{child}")
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % (2**31 - 1)


# ----------------------------------------------------------------------------------------------- beams


@dataclass
class Sentence:
    """One generated sentence: what every engine returns, K of them per expansion request."""

    token_ids: list[int]
    logprobs: list[float]
    text: str
    end: str  # END_DELIMITER | END_EOS | END_CUT


@dataclass(frozen=True)
class Expansion:
    """One engine request: continue ``prompt`` + ``prefix_ids`` with ``n`` sampled sentences."""

    prompt: Any  # the engine's prepared prompt (has .key and .n_tokens)
    prefix_ids: tuple[int, ...]
    n: int
    seed: int


@dataclass
class Beam:
    """A partial or finished response: its sentences and how it descends from earlier beams."""

    beam_id: str
    sentences: list[Sentence] = field(default_factory=list)
    lineage: tuple[str, ...] = ()  # beam ids from the first step to this one's parent
    finish_reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def token_ids(self) -> tuple[int, ...]:
        return tuple(t for s in self.sentences for t in s.token_ids)

    @property
    def n_tokens(self) -> int:
        return sum(len(s.token_ids) for s in self.sentences)

    @property
    def sum_logprob(self) -> float:
        return sum(lp for s in self.sentences for lp in s.logprobs)

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.sentences)

    def score(self, length_normalize: bool) -> float:
        """Cumulative log-probability, or its per-token mean (so long rationales are not penalised)."""
        if not length_normalize:
            return self.sum_logprob
        return self.sum_logprob / max(self.n_tokens, 1)


@dataclass(frozen=True)
class SearchParams:
    """The recipe's ``search`` knobs the algorithm reads (flat, so tests build it directly)."""

    beams: int = 5
    expansions: int = 2
    max_sentences: int = 8
    max_sentence_tokens: int = 70
    length_normalize: bool = True
    keep_rule: str = "top_bottom"
    n_candidates: int = 5
    answer_prefix: str = "Answer:"

    @classmethod
    def from_recipe(cls, recipe) -> SearchParams:
        s = recipe.search
        return cls(beams=s.beams, expansions=s.expansions, max_sentences=s.max_sentences,
                   max_sentence_tokens=s.max_sentence_tokens, length_normalize=s.length_normalize,
                   keep_rule=s.keep_rule, n_candidates=s.n_candidates, answer_prefix=recipe.rap_answer_prefix)


def is_answer_line(text: str, prefix: str) -> bool:
    """True when the sentence is the RAP's final ``Answer: …`` line (which ends the response)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return bool(lines) and bool(prefix.strip()) and lines[-1].lower().startswith(prefix.strip().lower())


def extend(parent: Beam, sentence: Sentence, beam_id: str, answer_prefix: str) -> Beam:
    """The child beam: ``parent`` plus ``sentence``, finished at EOS or after the answer line."""
    sentences = parent.sentences + ([sentence] if sentence.token_ids else [])
    lineage = parent.lineage + ((parent.beam_id,) if parent.sentences else ())
    reason = None
    if sentence.end == END_EOS:
        reason = FINISH_EOS
    elif is_answer_line(sentence.text, answer_prefix):
        reason = FINISH_ANSWER
    return Beam(beam_id, sentences, lineage, reason)


def normalized_text(beam: Beam) -> str:
    return " ".join(beam.text.split())


def dedupe(beams: Sequence[Beam], length_normalize: bool) -> list[Beam]:
    """Drop beams whose text (whitespace-normalised) repeats a better-scored one: identical prefixes
    waste slots and would give candidates that differ in nothing (the point of the search)."""
    best: dict[str, Beam] = {}
    for b in rank(beams, length_normalize):
        best.setdefault(normalized_text(b), b)
    return list(best.values())


def rank(beams: Sequence[Beam], length_normalize: bool) -> list[Beam]:
    """Best first; ties broken by beam id so the order never depends on dict or batch order."""
    return sorted(beams, key=lambda b: (-b.score(length_normalize), b.beam_id))


def keep(beams: Sequence[Beam], k: int, rule: str, length_normalize: bool) -> list[Beam]:
    """Choose ``k`` beams. ``top``: the k best. ``top_bottom`` (CSR): the best ⌈k/2⌉ and the worst
    ⌊k/2⌋ — e.g. k=5 of scores [9,8,7,6,5,4,3] keeps [9,8,7] and [4,3]."""
    ranked = rank(beams, length_normalize)
    if len(ranked) <= k:
        return ranked
    if rule == "top":
        return ranked[:k]
    if rule != "top_bottom":
        raise ValueError(f"unknown keep rule {rule!r}; expected 'top' or 'top_bottom'")
    top = (k + 1) // 2
    return ranked[:top] + ranked[len(ranked) - (k - top):] if k - top else ranked[:top]


ExpandFn = Callable[[list[Expansion]], list[list[Sentence]]]


def beam_search(prompts: Sequence[Any], expand: ExpandFn, params: SearchParams, seed: int,
                context_len: int | None = None) -> list[list[Beam]]:
    """Sentence-level beam search over a batch of prompts in lockstep: one ``expand`` call per step.

    ``prompts[i].key`` (the sample id) keys the seeds; ``prompts[i].n_tokens`` and ``context_len`` (the
    model's context) finish a beam early (reason ``"context"``) when one more sentence would not fit.
    Returns, per prompt, up to ``params.n_candidates`` finished beams chosen by ``params.keep_rule``.
    """
    active: list[list[Beam]] = [[Beam("root")] for _ in prompts]
    finished: list[list[Beam]] = [[] for _ in prompts]
    ln = params.length_normalize
    for step in range(params.max_sentences):
        requests, owners = [], []
        for i, prompt in enumerate(prompts):
            for b, beam in enumerate(active[i]):
                requests.append(Expansion(prompt, beam.token_ids, params.expansions,
                                          expansion_seed(seed, prompt.key, step, b)))
                owners.append((i, b, beam))
        if not requests:
            break
        outputs = expand(requests)
        if len(outputs) != len(requests):
            raise RuntimeError(f"engine returned {len(outputs)} results for {len(requests)} requests")
        children: list[list[Beam]] = [[] for _ in prompts]
        last_step = step == params.max_sentences - 1
        for (i, b, beam), sentences in zip(owners, outputs):
            for k, sentence in enumerate(sentences):
                child = extend(beam, sentence, f"s{step}b{b}k{k}", params.answer_prefix)
                if not child.finished and last_step:
                    child.finish_reason = FINISH_MAX
                elif not child.finished and context_len is not None and (
                        prompts[i].n_tokens + child.n_tokens + params.max_sentence_tokens + 1 > context_len):
                    child.finish_reason = FINISH_CONTEXT
                children[i].append(child)
        for i in range(len(prompts)):
            pool = dedupe(children[i], ln)
            finished[i] += [c for c in pool if c.finished]
            active[i] = keep([c for c in pool if not c.finished], params.beams, params.keep_rule, ln)
    return [keep(dedupe(f, ln), params.n_candidates, params.keep_rule, ln) for f in finished]


# --------------------------------------------------------------------------------------------- records


def candidate_record(sample: dict, beam: Beam, index: int, params: SearchParams) -> dict:
    """One ``candidates.jsonl`` row: the response text plus everything needed to audit how it was made."""
    from srcal.data.rap import parse_rap

    text = beam.text.strip()
    parsed = parse_rap(text, params.answer_prefix)
    return {
        "id": f"{sample['id']}#c{index}",
        "sample_id": sample["id"],
        "index": index,
        "text": text,
        "answer": parsed.answer,
        "rap_ok": parsed.ok,
        "sentences": [s.text for s in beam.sentences],
        "sentence_ends": [s.end for s in beam.sentences],
        "token_ids": [s.token_ids for s in beam.sentences],
        "token_logprobs": [[round(x, 5) for x in s.logprobs] for s in beam.sentences],
        "beam_id": beam.beam_id,
        "lineage": list(beam.lineage),
        "score": round(beam.score(params.length_normalize), 6),
        "sum_logprob": round(beam.sum_logprob, 5),
        "n_tokens": beam.n_tokens,
        "finish_reason": beam.finish_reason,
        "cut_sentences": sum(s.end == END_CUT for s in beam.sentences),
    }


def _sentence_set(rec: dict) -> frozenset[str]:
    from srcal.data.rap import split_sentences

    rationale = rec["text"]
    if rec.get("answer") is not None:
        idx = rationale.lower().rfind("answer:")
        rationale = rationale[:idx] if idx >= 0 else rationale
    return frozenset(" ".join(s.lower().split()) for s in split_sentences(rationale))


def _rationale(rec: dict) -> str:
    return " ".join(sorted(_sentence_set(rec))) if rec["text"] else ""


def is_correct(sample: dict, rec: dict, prefix: str) -> bool:
    """Correctness of one candidate by the rule evaluation and curation use (:mod:`srcal.answers`), so the
    report's ``share_mixed`` counts exactly the samples curation can pair with different answers."""
    from srcal.answers import response_correct

    return response_correct(sample, rec["text"], prefix)


def diversity_report(samples: dict[str, dict], candidates: Sequence[dict], prefix: str) -> dict:
    """How diverse and how useful for preference pairs the candidates are, averaged over samples.

    * ``distinct_rationales_exact``: distinct rationale texts (answer line removed, whitespace-normalised);
    * ``distinct_rationales_sentence_set``: distinct *sets* of sentences (reordering the same claims does
      not count as a new reasoning path); ``mean_pairwise_sentence_jaccard``: overlap of those sets;
    * ``share_mixed``: samples with at least one correct and one incorrect candidate — exactly those can
      give a (chosen, rejected) pair whose answers differ.
    """
    by_sample: dict[str, list[dict]] = {}
    for rec in candidates:
        by_sample.setdefault(rec["sample_id"], []).append(rec)
    if not by_sample:
        return {"samples": 0}
    n_c, answers, exact, sets, jac, toks, mixed, any_correct, acc = [], [], [], [], [], [], 0, 0, []
    for sid, recs in by_sample.items():
        sample = samples.get(sid)
        n_c.append(len(recs))
        answers.append(len({(r.get("answer") or "").strip().lower() for r in recs}))
        rationale_texts = []
        for r in recs:
            rat = r["text"]
            idx = rat.lower().rfind(prefix.strip().lower()) if prefix.strip() else -1
            rationale_texts.append(" ".join((rat[:idx] if idx >= 0 else rat).split()))
        exact.append(len(set(rationale_texts)))
        ss = [_sentence_set(r) for r in recs]
        sets.append(len(set(ss)))
        pairs = [(a, b) for i, a in enumerate(ss) for b in ss[i + 1:]]
        if pairs:
            jac.append(sum(len(a & b) / max(len(a | b), 1) for a, b in pairs) / len(pairs))
        toks += [r["n_tokens"] for r in recs]
        if sample is not None:
            flags = [is_correct(sample, r, prefix) for r in recs]
            acc.append(sum(flags) / len(flags))
            mixed += any(flags) and not all(flags)
            any_correct += any(flags)

    def mean(xs):
        return round(sum(xs) / len(xs), 4) if xs else None

    n = len(by_sample)
    judged = len(acc)  # samples whose ground truth we have
    return {
        "samples": n,
        "candidates": sum(n_c),
        "candidates_per_sample": mean(n_c),
        "min_candidates_per_sample": min(n_c),
        "distinct_answers": mean(answers),
        "distinct_rationales_exact": mean(exact),
        "distinct_rationales_sentence_set": mean(sets),
        "mean_pairwise_sentence_jaccard": mean(jac),
        "mean_tokens": mean(toks),
        "candidate_accuracy": mean(acc),
        "share_with_correct": round(any_correct / judged, 4) if judged else None,
        "share_mixed": round(mixed / judged, 4) if judged else None,
    }


# ---------------------------------------------------------------------------------------------- sharding


def parse_shard(spec: str | None) -> tuple[int, int]:
    """``"i/n"`` → (i, n) with 0 ≤ i < n; a clear error otherwise."""
    if spec in (None, ""):
        return 0, 1
    try:
        i, n = (int(x) for x in str(spec).split("/"))
    except ValueError:
        raise ValueError(f"shard {spec!r}: expected 'i/n', e.g. shard=0/4") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {spec!r}: need 0 ≤ i < n")
    return i, n


def shard_slice(rows: Sequence[dict], i: int, n: int) -> list[dict]:
    """Every n-th row starting at i: deterministic, disjoint, covering, and balanced over categories
    (the split files interleave categories), unlike contiguous blocks."""
    return list(rows[i::n])


# ------------------------------------------------------------------------------------- rounds


def parse_round(name: str | None) -> int | None:
    """``"round3"`` → 3; anything else (None, ``"eval"``, a bench run) → None: not an SRC round."""
    if name and str(name).startswith("round") and str(name)[5:].isdigit() and int(str(name)[5:]) >= 1:
        return int(str(name)[5:])
    return None


def round_seed(master: int, k: int | None) -> int:
    """The master seed of round ``k``'s expansions: the recipe seed for round 1 (and outside rounds), a
    hash of (seed, k) after that, so round k never re-draws round 1's sentences even on the same sample."""
    if k is None or k == 1:
        return master
    return int.from_bytes(hashlib.sha256(f"{master}:round{k}".encode()).digest()[:8], "big") % (2**31 - 1)


def round_slice(rows: Sequence[dict], k: int | None, rounds: int, fresh: bool) -> list[dict]:
    """The calibration rows round ``k`` of ``rounds`` searches (``search.fresh_per_round``).

    Fresh: every ``rounds``-th row starting at k − 1 — disjoint across rounds, together covering the
    split, each slice balanced over categories like :func:`shard_slice` (the split interleaves them), so
    each round's DPO sees pairs from samples no earlier round used (issue 13: the same 240 samples searched
    every round with the same seeds gave ~ln 2 DPO loss from round 2 on). Not fresh, or not a round: all rows.
    """
    if not fresh or k is None:
        return list(rows)
    if k > rounds:
        raise ValueError(f"round {k} of a {rounds}-round recipe: no calibration slice for it")
    return list(rows[k - 1::rounds])


# ----------------------------------------------------------------------------------- resumable output


class CandidateWriter:
    """Append-only ``candidates.jsonl`` + ``rejected.jsonl`` with per-sample completion in ``done.jsonl``.

    A sample counts as done only once its line is in ``done.jsonl``, written *after* its candidates were
    flushed to disk. On open, candidate rows of samples that are not done (a crash mid-batch) and a torn
    last line are dropped, so a re-run continues from the last completed sample and emits no duplicates.
    """

    def __init__(self, out: Path):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.paths = {k: self.out / f"{k}.jsonl" for k in ("candidates", "rejected", "done")}
        self.done: dict[str, dict] = {r["sample_id"]: r for r in self._read("done")}
        for kind in ("candidates", "rejected"):
            rows = self._read(kind)
            kept = [r for r in rows if r.get("sample_id") in self.done]
            if len(kept) != len(rows) or self._torn(kind):
                self._rewrite(kind, kept)

    def _read(self, kind: str) -> list[dict]:
        path = self.paths[kind]
        if not path.exists():
            return []
        return jsonl.read_jsonl(path)  # a torn last line from a killed run is skipped (and logged)

    def _torn(self, kind: str) -> bool:
        return jsonl.is_torn(self.paths[kind])

    def _rewrite(self, kind: str, rows: list[dict]) -> None:
        jsonl.write_jsonl(self.paths[kind], rows)

    def _append(self, kind: str, rows: list[dict]) -> None:
        jsonl.append_jsonl(self.paths[kind], rows)

    def commit(self, candidates: list[dict], rejected: list[dict], sample_ids: Sequence[str]) -> None:
        """Write one batch: candidates and rejections first, then the completion lines."""
        self._append("candidates", candidates)
        self._append("rejected", rejected)
        counts: dict[str, int] = {}
        for c in candidates:
            counts[c["sample_id"]] = counts.get(c["sample_id"], 0) + 1
        rejected_ids = {r["sample_id"] for r in rejected}
        done = [{"sample_id": s, "candidates": counts.get(s, 0), "rejected": s in rejected_ids} for s in sample_ids]
        self._append("done", done)
        self.done.update({d["sample_id"]: d for d in done})

    def candidates(self) -> list[dict]:
        return self._read("candidates")

    def rejected(self) -> list[dict]:
        return self._read("rejected")


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
        from srcal.engines.hf import HFEngine
        from srcal.models.loading import load_policy, pick_device

        model, processor = load_policy(inputs["base"], inputs.get("policy"), dtype=recipe.model.dtype,
                                       device=pick_device(recipe.device),
                                       attn_implementation=recipe.model.attn_implementation)
        return HFEngine(model, processor, delimiters=s.sentence_delimiters,
                        max_sentence_tokens=s.max_sentence_tokens, temperature=s.temperature, top_p=s.top_p,
                        min_p=s.min_p, batched=batched)
    if s.engine == "vllm":
        from srcal.engines.vllm import VLLMEngine

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
    from srcal.data import shapes
    from srcal.models.capabilities import tiny_family
    from srcal.models.loading import load_lvlm
    from srcal.models.tiny import build_tiny_lvlm

    cfg, t = recipe.data.shapes, recipe.model.tiny
    sizes = {"patch_size": t.patch_size, "vision_hidden": t.vision_hidden, "vision_layers": t.vision_layers,
             "text_hidden": t.text_hidden, "text_layers": t.text_layers, "text_heads": t.text_heads}
    model_dir = build_tiny_lvlm(tiny_family(recipe), shapes.corpus(cfg, 200, recipe.seed), workdir / "model",
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
        from srcal.engines.hf import HFEngine

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
    its wheel cannot be carried to our GPU machine (notes/environment.md §11).
    """
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from srcal.engines.hf import HFEngine

    if not random_weights:
        raise ValueError("--arch needs --random-weights (no checkpoints can be downloaded here)")
    if arch not in ARCHS:
        raise ValueError(f"unknown --arch {arch!r}; known: {sorted(ARCHS)}")
    a = ARCHS[arch]
    device = "cuda" if torch.cuda.is_available() else "cpu"
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
        "anchor": "published: ~5-6k output tok/s for 8B models on one H100 with vLLM (notes §6)",
        "vllm": "not measured on the GPU machine: the vLLM wheel cannot be carried there (environment.md §11)",
    }
