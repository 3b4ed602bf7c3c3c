"""The sample schema every split file follows (docs/architecture.md), and its JSONL reader/writer.

One JSON object per line::

    {"id": str, "image": "images/<file>.png" (relative to the JSONL's directory), "question": str,
     "answer": str, "category": "perception" | "chart" | "math", "source": str,
     "choices": [str, ...] (optional, multiple choice), "scene": dict (optional, shapes world only),
     "rationale": str (optional, a dataset-provided explanation), "meta": dict (optional)}

Unknown extra keys are kept (adapters may record provenance), known keys are type-checked.

Bad input is quarantined, not fatal (the house rule): :func:`read_jsonl` returns the good rows plus a
list of rejected entries ``{"file", "line", "id", "field", "reason"}`` that callers write to
``rejected.jsonl``; only when the rejected share exceeds the recipe's ``data.max_rejected_share`` does it
raise :class:`DataError`, naming the file and the first problems.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

from srcal.run import jsonl
from srcal.run.jsonl import dumps_line, iter_jsonl

CATEGORIES: tuple[str, ...] = ("perception", "chart", "math")
REQUIRED_STR_FIELDS: tuple[str, ...] = ("id", "image", "question", "answer", "source")


class DataError(ValueError):
    """Input data that cannot be used as a whole; the message names the file and how to fix it."""


def sample_problems(row: Any, images_root: str | os.PathLike | None = None,
                    max_prompt_chars: int = 0) -> list[tuple[str, str]]:
    """(field, reason) for every problem of one sample row; empty when the row is valid.

    With ``images_root`` the image file must also exist under it and decode as an image. With
    ``max_prompt_chars`` (recipe ``data.max_prompt_chars``) a row whose prompt text is longer is a problem
    (:func:`prompt_chars_problem`).
    """
    if not isinstance(row, dict):
        return [("<row>", f"expected a JSON object, got {type(row).__name__}")]
    out: list[tuple[str, str]] = []
    for f in REQUIRED_STR_FIELDS:
        v = row.get(f)
        if v is None:
            out.append((f, "missing"))
        elif not isinstance(v, str):
            out.append((f, f"expected a string, got {type(v).__name__} {v!r:.40}"))
        elif not v.strip():
            out.append((f, "empty"))
    cat = row.get("category")
    if cat is None:
        out.append(("category", "missing"))
    elif cat not in CATEGORIES:
        out.append(("category", f"unknown category {cat!r}; expected one of {list(CATEGORIES)}"))
    choices = row.get("choices")
    if choices is not None and (not isinstance(choices, list) or len(choices) < 2
                                or not all(isinstance(c, str) for c in choices)):
        out.append(("choices", "expected a list of at least two strings or null"))
    if row.get("scene") is not None and not isinstance(row["scene"], (dict, str)):
        out.append(("scene", "expected an object or a string"))
    if row.get("rationale") is not None and not isinstance(row["rationale"], str):
        out.append(("rationale", "expected a string"))
    if max_prompt_chars and not out:
        problem = prompt_chars_problem(row, max_prompt_chars)
        if problem:
            out.append(("question", problem))
    image = row.get("image")
    if isinstance(image, str) and image.strip():
        p = PurePosixPath(image)
        if p.is_absolute() or ".." in p.parts:
            out.append(("image", f"{image!r}: must be a path relative to the JSONL's directory"))
        elif images_root is not None:
            problem = image_problem(Path(images_root) / image)
            if problem:
                out.append(("image", problem))
    return out


def prompt_chars(row: dict) -> int:
    """Characters of a sample's prompt text: the question plus its choices (what every stage shows)."""
    choices = row.get("choices") if isinstance(row.get("choices"), list) else []
    return len(str(row.get("question") or "")) + sum(len(str(c)) for c in choices)


def prompt_chars_problem(row: dict, max_prompt_chars: int) -> str | None:
    """Why a row's prompt is too long for ``data.max_prompt_chars``, or None.

    The cheap guard that runs before any tokenizer: a runaway row (one huge question once exhausted the
    machine in ``srcal eval`` — a batch is padded to its longest row and attention is quadratic in that
    length) is refused here, so peak memory follows the recipe's limits, never the longest input row.
    """
    n = prompt_chars(row)
    if max_prompt_chars and n > max_prompt_chars:
        return f"prompt of {n} characters > data.max_prompt_chars={max_prompt_chars}"
    return None


def context_length(config: Any = None, tokenizer: Any = None) -> int | None:
    """The model's context in tokens, or None when neither source states one.

    The smaller of the tokenizer's ``model_max_length`` (Hugging Face stores ~1e30 for "not set", so values
    above 10^7 are ignored) and the config's ``max_position_embeddings`` (the text model's, for the
    vision-language configs that nest it under ``text_config``). Duck-typed: needs no transformers import.
    """
    found = []
    n = getattr(tokenizer, "model_max_length", None)
    if isinstance(n, int) and 0 < n < 10**7:
        found.append(n)
    for cfg in (getattr(config, "text_config", None), config):
        n = getattr(cfg, "max_position_embeddings", None)
        if isinstance(n, int) and n > 0:
            found.append(n)
            break
    return min(found) if found else None


def prompt_tokens_problem(n_prompt_tokens: int, context: int | None, reserve: int = 0) -> str | None:
    """Why a prompt of ``n_prompt_tokens`` does not fit the context with ``reserve`` tokens left for the
    answer (and any image tokens the caller did not count), or None. ``context`` None: no check."""
    if context and n_prompt_tokens + reserve > context:
        return (f"prompt of {n_prompt_tokens} tokens + {reserve} reserved > the model's context of {context} "
                f"tokens")
    return None


def validate_sample(row: Any, images_root: str | os.PathLike | None = None) -> list[str]:
    """Human-readable problems of one row (``"field: reason"``); empty when valid."""
    return [f"{f}: {r}" for f, r in sample_problems(row, images_root)]


def image_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable image, or None. Decodes the header only (cheap)."""
    if not path.is_file():
        return f"{path}: file not found"
    try:
        from PIL import Image

        with Image.open(path) as im:
            im.verify()
    except Exception as e:  # noqa: BLE001 - PIL raises many types for a broken file; all mean "unreadable"
        return f"{path}: unreadable image ({type(e).__name__}: {e})"
    return None


def rejected_entry(file: str | os.PathLike, line: int | None, row_id: Any, field: str | None,
                   reason: str) -> dict:
    """The one shape of a quarantined row, for every reader and adapter."""
    return {"file": str(file), "line": line, "id": row_id, "field": field, "reason": reason}


def check_rejected_share(file: str | os.PathLike, n_rows: int, rejected: list[dict],
                         max_rejected_share: float) -> None:
    """Raise :class:`DataError` when more than ``max_rejected_share`` of ``n_rows`` were rejected.

    Per-row problems are tolerated up to the recipe threshold because public datasets always carry a few
    broken rows; beyond it the input itself is probably wrong (wrong file, wrong adapter, wrong columns).
    """
    if not rejected:
        return
    share = len(rejected) / max(n_rows, 1)
    if share > max_rejected_share:
        reasons = Counter(f"{r['field']}: {r['reason']}" if r.get("field") else r["reason"] for r in rejected)
        first = rejected[0]
        raise DataError(
            f"{file}: {len(rejected)} of {n_rows} rows rejected ({share:.1%} > data.max_rejected_share="
            f"{max_rejected_share}). First: line {first['line']} id={first['id']!r} field={first['field']!r}: "
            f"{first['reason']}. Most common: {reasons.most_common(3)}. Fix the input (or check the adapter "
            f"and columns), or raise data.max_rejected_share with --set data.max_rejected_share=…"
        )


def read_jsonl(path: str | os.PathLike, *, images_root: str | os.PathLike | None = None,
               max_rejected_share: float, max_prompt_chars: int = 0) -> tuple[list[dict], list[dict]]:
    """Read a sample JSONL file: (valid rows, rejected entries).

    Lines are read by :func:`srcal.run.jsonl.iter_jsonl` (bytes split on ``\\n``, each line decoded alone), so
    rejected also holds lines that are not UTF-8, not JSON, longer than the reader's line limit, or a torn
    last line. Then rows that are not objects, rows with missing/ill-typed fields or unknown categories,
    duplicate ids (the later one), prompts over ``max_prompt_chars`` (recipe ``data.max_prompt_chars``;
    0 = no limit), and, when ``images_root`` is given, missing or unreadable images. Blank lines are
    ignored. Raises :class:`DataError` when the rejected share exceeds the threshold.
    """
    path = Path(path)
    rows: list[dict] = []
    rejected: list[dict] = []
    seen: dict[str, int] = {}
    n = 0
    for lineno, row in iter_jsonl(path, rejected, objects_only=False):
        n += 1
        row_id = row.get("id") if isinstance(row, dict) else None
        problems = sample_problems(row, images_root, max_prompt_chars)
        if problems:
            field = problems[0][0]
            reason = "; ".join(f"{f}: {r}" for f, r in problems)
            rejected.append(rejected_entry(path, lineno, row_id, field, reason))
            continue
        if row_id in seen:
            rejected.append(rejected_entry(path, lineno, row_id, "id", f"duplicate id (first at line {seen[row_id]})"))
            continue
        seen[row_id] = lineno
        rows.append(row)
    n += sum(1 for r in rejected if r["field"] is None)  # lines the reader quarantined count as rows too
    rejected.sort(key=lambda r: r["line"] or 0)
    check_rejected_share(path, n, rejected, max_rejected_share)
    return rows, rejected


def dumps_row(row: dict) -> str:
    """One canonical JSON line: sorted keys, UTF-8 (no escaping), so equal rows give equal bytes."""
    return dumps_line(row, sort_keys=True)


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write rows deterministically (sorted keys, one per line, ``\\n`` endings, UTF-8), atomically."""
    jsonl.write_jsonl(path, rows, sort_keys=True)
