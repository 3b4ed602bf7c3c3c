"""The one JSONL reader and writer every stage uses.

Why one: the stages used to carry six private readers with different rules, and several split file text
with ``str.splitlines()``, which also breaks at U+0085, U+2028 and U+2029 — characters that
``json.dumps(..., ensure_ascii=False)`` writes raw inside strings. A model candidate containing U+0085 was
cut in two, silently dropped by one stage and fatal (``JSONDecodeError``) to the next. The rules here:

* The file is read as **bytes and split on ``b"\\n"`` only**; each line is decoded on its own, so one
  line that is not UTF-8 costs that line, not the file.
* A bad line is **quarantined, never raised**: an entry ``{"file", "line", "id", "field", "reason"}``
  (the shape of :func:`srcal.data.schema.rejected_entry`) goes to the caller's ``rejected`` list, or, when
  the caller keeps none, to the log as a warning naming file and line. Reasons: not UTF-8, malformed JSON,
  not a JSON object, longer than ``max_line_bytes`` (read in bounded chunks, so a runaway line cannot
  exhaust memory), and a **torn last line** (no final ``\\n`` and not parseable — a writer killed
  mid-line), which every reader treats the same way.
* Blank lines are skipped; a last line without ``\\n`` that parses is a row (hand-written files).
* The writer emits UTF-8 without escaping (``ensure_ascii=False``) except where a string holds a lone
  surrogate, which UTF-8 cannot carry — that row is written with ``\\uXXXX`` escapes instead, so every
  Python string round-trips. ``sort_keys`` makes equal rows give equal bytes where a stage wants that.

``tests/test_jsonl.py`` walks the package source and fails if a JSONL file is read any other way.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger("srcal.run.jsonl")

# A JSON row in any srcal artifact is a sample, a candidate or a judgment: kilobytes. 32 MiB is far above
# any honest row and far below what hurts a machine; a longer line is quarantined without being held whole.
MAX_LINE_BYTES = 32 * 1024 * 1024
_CHUNK = 1024 * 1024


def _entry(path: Path, line: int, reason: str, row_id: Any = None, field: str | None = None) -> dict:
    return {"file": str(path), "line": line, "id": row_id, "field": field, "reason": reason}


def _lines(f: BinaryIO, max_line_bytes: int) -> Iterator[tuple[bytes | None, bool]]:
    """(line without its ``\\n`` or None when over the limit, whether it ended with ``\\n``)."""
    while True:
        line = f.readline(max_line_bytes + 1)
        if not line:
            return
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            ended = False
            while True:  # skip the rest of the runaway line in bounded chunks
                rest = f.readline(_CHUNK)
                if not rest or rest.endswith(b"\n"):
                    ended = bool(rest)
                    break
            yield None, ended
            continue
        if line.endswith(b"\n"):
            yield line[:-1], True
        else:
            yield line, False


def iter_jsonl(path: str | os.PathLike, rejected: list[dict] | None = None, *, objects_only: bool = True,
               missing_ok: bool = False, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, row)`` for every good line of a JSONL file; quarantine the rest.

    ``objects_only`` (default) also quarantines rows that are valid JSON but not objects. With
    ``missing_ok`` an absent file yields nothing (a resumable writer's first run); otherwise it raises
    ``FileNotFoundError`` like ``open`` — a missing input is the caller's error, not a bad row.
    """
    path = Path(path)
    if missing_ok and not path.exists():
        return

    def bad(lineno: int, reason: str) -> None:
        entry = _entry(path, lineno, reason)
        if rejected is None:
            log.warning("%s:%d: %s (line skipped)", path, lineno, reason)
        else:
            rejected.append(entry)

    with open(path, "rb") as f:
        for lineno, (raw, ended) in enumerate(_lines(f, max_line_bytes), start=1):
            if raw is None:
                bad(lineno, f"line longer than {max_line_bytes} bytes")
                continue
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad(lineno, f"not valid UTF-8 (byte {e.start}: {e.reason})" if ended
                    else "torn last line (a writer killed mid-line?): not valid UTF-8")
                continue
            try:
                row = json.loads(text)
            except (ValueError, RecursionError) as e:  # JSONDecodeError, int digit limit, deep nesting
                bad(lineno, f"malformed JSON: {e}" if ended else "torn last line (a writer killed mid-line?)")
                continue
            if objects_only and not isinstance(row, dict):
                bad(lineno, f"expected a JSON object, got {type(row).__name__}")
                continue
            yield lineno, row


def read_jsonl(path: str | os.PathLike, rejected: list[dict] | None = None, *, objects_only: bool = True,
               missing_ok: bool = False, max_line_bytes: int = MAX_LINE_BYTES) -> list[Any]:
    """Every good row of a JSONL file, in order (see :func:`iter_jsonl` for what is quarantined)."""
    return [row for _, row in iter_jsonl(path, rejected, objects_only=objects_only, missing_ok=missing_ok,
                                         max_line_bytes=max_line_bytes)]


def is_torn(path: str | os.PathLike) -> bool:
    """True when a non-empty file does not end with ``\\n`` (its last line was cut by a kill)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def dumps_line(row: Any, *, sort_keys: bool = False) -> str:
    """One JSON line (no trailing newline) that round-trips through :func:`read_jsonl`.

    Raw UTF-8 for readability; a row whose strings hold a lone surrogate (which UTF-8 cannot encode) is
    written with ASCII escapes instead. ``default=str`` keeps paths and similar values writable.
    """
    text = json.dumps(row, sort_keys=sort_keys, ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(row, sort_keys=sort_keys, ensure_ascii=True, default=str)
    return text


def _encode(rows: Iterable[Any], sort_keys: bool) -> bytes:
    return b"".join((dumps_line(r, sort_keys=sort_keys) + "\n").encode("utf-8") for r in rows)


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any], *, sort_keys: bool = False) -> None:
    """Write rows atomically (temp file + rename): a kill leaves the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(_encode(rows, sort_keys))
    os.replace(tmp, path)


def append_jsonl(path: str | os.PathLike, rows: Iterable[Any], *, sort_keys: bool = False,
                 fsync: bool = True) -> None:
    """Append rows and (by default) fsync, for resumable writers whose file is their resume point."""
    data = _encode(rows, sort_keys)
    if not data:
        return
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
