"""Training targets that end the assistant turn with the model's end token, whatever the chat template.

Why: TRL renders a conversational completion as the chat template's text after the prompt. Templates
that close the assistant turn with an end-of-turn token (Qwen's ``<|im_end|>``, Llama-3's
``<|eot_id|>``) put that token in the targets; llava-hf's LLaVA-1.5 template renders ``ASSISTANT: text ``
with no ``</s>`` (the original LLaVA training appended it), so a model fine-tuned on those targets never
learns to stop and generates until ``max_new_tokens`` (issue 12, bug 4).

:func:`turn_end_text` finds out, for any processor/tokenizer, whether the rendered assistant turn already
contains one of the model's end tokens after the text; if not, it returns the tokenizer's EOS text,
which :func:`end_assistant_turns` appends to every assistant message of SFT (``completion``) and DPO
(``chosen``/``rejected``) rows.

:func:`bos_like_inference` fixes the other end of the sequence: TRL tokenizes the rendered conversation
with ``add_special_tokens=False`` (it assumes the template writes the BOS), but the llava-hf templates
(LLaVA-1.5, LLaVA-NeXT) do not, while the processor call at inference (search, eval) adds it — so the
model would be tuned on prompts without the ``<s>`` / ``<|begin_of_text|>`` it always sees afterwards.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

_PROBE = "srcal probe 7"


def _tokenizer(processor):
    return getattr(processor, "tokenizer", processor)


def end_token_ids(processor, model=None) -> set[int]:
    """Ids that end generation: the tokenizer's EOS plus the model's ``generation_config.eos_token_id``."""
    ids: set[int] = set()
    tok = _tokenizer(processor)
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen is not None:
        ids.update(int(i) for i in (gen if isinstance(gen, list) else [gen]))
    return ids


def _render_turn(processor) -> str:
    """One user + assistant exchange rendered by the chat template (content as parts, else as strings)."""
    for as_parts in (True, False):
        user, probe = ([{"type": "text", "text": t}] if as_parts else t for t in ("Hi", _PROBE))
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": probe}]
        try:
            text = processor.apply_chat_template(msgs, tokenize=False)
        except Exception:  # noqa: BLE001 — a template that only takes strings (or only parts)
            continue
        if isinstance(text, list):
            text = text[0]
        if _PROBE in text:
            return text
    raise ValueError("the chat template does not render a user/assistant exchange; cannot find its turn end")


def turn_end_text(processor, end_ids: Iterable[int] = ()) -> str:
    """Text to append to an assistant message so that its training target ends with an end token.

    ``""`` when the template's own text after the assistant message already holds one of ``end_ids`` or the
    tokenizer's EOS (Qwen, Llama-3); else the tokenizer's EOS text (LLaVA-1.5: ``"</s>"``).
    """
    tok = _tokenizer(processor)
    ends = set(end_ids) | ({tok.eos_token_id} if tok.eos_token_id is not None else set())
    rendered = _render_turn(processor)
    tail = rendered[rendered.rindex(_PROBE) + len(_PROBE):]
    if any(i in ends for i in tok(tail, add_special_tokens=False)["input_ids"]):
        return ""
    if tok.eos_token is None:
        raise ValueError("the chat template ends the assistant turn without an end token, and the tokenizer "
                         "has no eos_token to append")
    return tok.eos_token


def end_assistant_turns(rows: list[dict[str, Any]], processor, end_ids: Iterable[int] = (),
                        keys: tuple[str, ...] = ("completion", "chosen", "rejected")) -> list[dict[str, Any]]:
    """Copies of TRL prompt/completion or preference rows whose assistant messages end with
    :func:`turn_end_text` (unchanged rows when the template ends turns itself)."""
    suffix = turn_end_text(processor, end_ids)
    if not suffix:
        return rows
    out = []
    for row in rows:
        row = dict(row)
        for key in keys:
            if key not in row:
                continue
            msgs = copy.deepcopy(row[key])
            for m in msgs:
                if m.get("role") != "assistant":
                    continue
                if isinstance(m["content"], str):
                    if not m["content"].endswith(suffix):
                        m["content"] += suffix
                else:
                    texts = [p for p in m["content"] if p.get("type") == "text"]
                    if texts and not texts[-1]["text"].endswith(suffix):
                        texts[-1]["text"] += suffix
            row[key] = msgs
        out.append(row)
    return out


def _adds_bos(tok) -> bool:
    """True when a plain tokenizer call starts with the BOS and the text alone does not."""
    if tok.bos_token_id is None:
        return False
    ids, plain = tok("a")["input_ids"], tok("a", add_special_tokens=False)["input_ids"]
    return bool(ids) and ids[0] == tok.bos_token_id and (not plain or plain[0] != tok.bos_token_id)


@contextmanager
def bos_like_inference(processor) -> Iterator[bool]:
    """While the block runs, the chat template starts with ``{{ bos_token }}`` if inference (a plain
    processor/tokenizer call) adds a BOS that the template itself does not write; restored afterwards, so
    a processor saved after the block is the released one. Yields whether the template was changed."""
    tok = _tokenizer(processor)
    template = getattr(processor, "chat_template", None)
    changed = False
    if template and _adds_bos(tok) and not _render_turn(processor).startswith(tok.bos_token):
        processor.chat_template = "{{ bos_token }}" + template
        changed = True
    try:
        yield changed
    finally:
        if changed:
            processor.chat_template = template
