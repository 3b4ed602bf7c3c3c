"""Beams of sentences and the sentence-level beam search over any engine (:func:`beam_search`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from srcal.search.sentences import END_EOS, expansion_seed

FINISH_ANSWER, FINISH_EOS, FINISH_MAX, FINISH_CONTEXT = "answer", "eos", "max_sentences", "context"


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


