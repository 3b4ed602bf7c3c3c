"""What a sentence is, exactly, for both engines (:class:`TokenTable`, :func:`find_sentence_end`), and the
seed of every expansion (:func:`expansion_seed`); the rules are in the :mod:`srcal.search` docstring."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

END_DELIMITER, END_EOS, END_CUT = "delimiter", "eos", "cut"


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
    (sample, step, beam): one seed shared across requests gives identical "diverse"
    samples. Kept below 2³¹ so every engine (torch generators, vLLM) accepts it.
    """
    key = f"{master}:{sample_id}:{step}:{beam}" + ("" if child is None else f":{child}")
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % (2**31 - 1)


