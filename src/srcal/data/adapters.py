"""Readers that turn the public parquet releases of VQA datasets into our sample schema (docs/architecture.md).

Column names and types as the releases ship them (verified from the HF cards / lmms-eval code):

=========  ======================================================================================
adapter    columns read (answer rule)
=========  ======================================================================================
chartqa    HuggingFaceM4/ChartQA train: ``image``, ``query``, ``label`` list[str] (answer = label[0]),
           ``human_or_machine``; lmms-lab/ChartQA test: ``image``, ``question``, ``answer``, ``type``
aokvqa     HuggingFaceM4/A-OKVQA: ``image``, ``question_id``, ``question``, ``choices``,
           ``correct_choice_idx`` (answer = choices[idx]), ``direct_answers``, ``rationales`` → rationale
scienceqa  lmms-lab/ScienceQA(-IMG), derek-thomas/ScienceQA: ``image`` (None on text-only rows →
           skipped), ``question``, ``hint`` (→ "Context: …"), ``choices``, ``answer`` int index,
           ``solution`` (else ``lecture``) → rationale
ai2d       lmms-lab/ai2d: ``image``, ``question``, ``options``, ``answer`` a *string* index ("2")
mathvista  AI4Math/MathVista: ``pid``, ``question``, ``decoded_image``, ``choices`` (None = free form),
           ``answer`` str, ``question_type``, ``answer_type``, ``unit``, ``precision``
mmstar     Lin-Chen/MMStar: ``index``, ``question`` (options embedded as "Options: A: …, B: …"),
           ``image``, ``answer`` letter, ``category``, ``l2_category``
=========  ======================================================================================

Multiple-choice rows keep ``choices`` and store the *text* of the right choice as ``answer`` (the letter,
where the dataset scores by letter, goes to ``meta.answer_letter``), so every downstream stage compares
answers the same way. Images arrive as parquet Image structs ``{"bytes", "path"}``; each is decoded
(so a broken image is caught here, not in training) and re-encoded as ``images/<id>.png`` in upright
8-bit RGB (:func:`to_rgb`).

A row that cannot be converted is quarantined with its file, row number (``line``: the 0-based row index
within that parquet file), field and reason; the source is only refused as a whole when the rejected share
passes ``data.max_rejected_share``. Rows that are well formed but not visual questions (ScienceQA's text-only
half) are listed the same way but *skipped* (:class:`RowSkipped`): they do not count towards that share.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from srcal.data.schema import check_rejected_share, rejected_entry, sample_problems

log = logging.getLogger("srcal.data.adapters")


class RowError(ValueError):
    """One row that cannot be converted: which field, and why."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


class RowSkipped(RowError):
    """A well-formed row that is not a sample for us (a text-only ScienceQA question): listed in
    ``rejected.jsonl`` with its reason, but not counted against ``data.max_rejected_share`` — half of
    ``derek-thomas/ScienceQA`` is text-only, and that is the release, not a broken file."""


# ---------------------------------------------------------------------------------------- small helpers


def _text(row: dict, col: str, *, required: bool = True) -> str:
    v = row.get(col)
    if v is None or (isinstance(v, str) and not v.strip()):
        if required:
            raise RowError(col, "missing or empty")
        return ""
    if not isinstance(v, (str, int, float)) or isinstance(v, bool):
        raise RowError(col, f"expected text, got {type(v).__name__}")
    return str(v).strip()


def _str_list(row: dict, col: str) -> list[str]:
    v = row.get(col)
    if not isinstance(v, (list, tuple)) or len(v) < 2 or not all(isinstance(c, (str, int, float)) for c in v):
        raise RowError(col, f"expected a list of at least two options, got {v!r:.60}")
    return [str(c).strip() for c in v]


def _pick(choices: list[str], idx: Any, col: str) -> str:
    """choices[idx] for an int (or int-valued string) index; a RowError naming ``col`` otherwise."""
    try:
        i = int(str(idx).strip()) if not isinstance(idx, bool) else None
    except (TypeError, ValueError):
        i = None
    if i is None or not 0 <= i < len(choices):
        raise RowError(col, f"answer index {idx!r} is not an index into {len(choices)} choices")
    return choices[i]


def _letter(i: int) -> str:
    return chr(ord("A") + i)


# ------------------------------------------------------------------------------------------- adapters
# Each adapter maps one parquet row to (fields, image value, native id or None). Fields are the schema's
# question/answer/choices/rationale/meta; the driver adds id, image path, category and source.

Converted = tuple[dict, Any, Any]


def chartqa(row: dict) -> Converted:
    """Both layouts: HuggingFaceM4 train (``query``/``label``) and lmms-lab test (``question``/``answer``)."""
    if "query" in row or "label" in row:
        label = row.get("label")
        if isinstance(label, (list, tuple)):
            if not label:
                raise RowError("label", "empty label list")
            label = label[0]
        answer = _text({"label": label}, "label")
        meta = {"human_or_machine": row.get("human_or_machine")}
        return {"question": _text(row, "query"), "answer": answer, "meta": meta}, row.get("image"), None
    return ({"question": _text(row, "question"), "answer": _text(row, "answer"), "meta": {"type": row.get("type")}},
            row.get("image"), None)


def aokvqa(row: dict) -> Converted:
    choices = _str_list(row, "choices")
    if row.get("correct_choice_idx") is None:
        raise RowError("correct_choice_idx", "missing (the A-OKVQA test split has no answers)")
    fields = {"question": _text(row, "question"), "choices": choices,
              "answer": _pick(choices, row["correct_choice_idx"], "correct_choice_idx"),
              "meta": {"direct_answers": row.get("direct_answers"),
                       "difficult_direct_answer": row.get("difficult_direct_answer")}}
    rationales = row.get("rationales")
    if isinstance(rationales, (list, tuple)) and any(isinstance(r, str) and r.strip() for r in rationales):
        fields["rationale"] = " ".join(r.strip() for r in rationales if isinstance(r, str) and r.strip())
    return fields, row.get("image"), _text(row, "question_id", required=False) or None


def scienceqa(row: dict) -> Converted:
    if row.get("image") is None:
        raise RowSkipped("image", "text-only row (no image): skipped, not a visual question")
    choices = _str_list(row, "choices")
    answer = _pick(choices, row.get("answer"), "answer")
    question = _text(row, "question")
    hint = _text(row, "hint", required=False)
    if hint:  # lmms-eval's prompt: the context comes first
        question = f"Context: {hint}\n{question}"
    fields = {"question": question, "choices": choices, "answer": answer,
              "meta": {"answer_letter": _letter(choices.index(answer)),
                       **{k: row.get(k) for k in ("subject", "topic", "skill", "grade") if row.get(k) is not None}}}
    rationale = _text(row, "solution", required=False) or _text(row, "lecture", required=False)
    if rationale:
        fields["rationale"] = rationale
    return fields, row.get("image"), None


def ai2d(row: dict) -> Converted:
    choices = _str_list(row, "options")
    answer = _pick(choices, row.get("answer"), "answer")  # a str holding the index, e.g. "2"
    return ({"question": _text(row, "question"), "choices": choices, "answer": answer,
             "meta": {"answer_letter": _letter(choices.index(answer))}}, row.get("image"), None)


def mathvista(row: dict) -> Converted:
    choices = row.get("choices")
    fields = {"question": _text(row, "question"), "answer": _text(row, "answer"),
              "meta": {k: row.get(k) for k in ("question_type", "answer_type", "unit", "precision")}}
    if choices is not None:
        fields["choices"] = _str_list(row, "choices")
        if fields["answer"] not in fields["choices"]:
            raise RowError("answer", f"{fields['answer']!r} is not one of the choices")
    image = row.get("decoded_image") if row.get("decoded_image") is not None else row.get("image")
    return fields, image, _text(row, "pid", required=False) or None


_MMSTAR_OPTION = re.compile(r"(?:^|,\s*)([A-F])[:.]\s*")


def parse_embedded_options(question: str) -> tuple[str, list[str]] | None:
    """Split "…\\nOptions: A: x, B: y, C: z" into (stem, [x, y, z]); None when there are no such options.

    Letters must run A, B, C, … in order, which keeps commas inside an option from splitting it.
    """
    stem, sep, opts = question.rpartition("Options:")
    if not sep:
        return None
    marks = list(_MMSTAR_OPTION.finditer(opts.strip()))
    text = opts.strip()
    if len(marks) < 2 or [m.group(1) for m in marks] != [_letter(i) for i in range(len(marks))]:
        return None
    choices = [text[m.end(): marks[i + 1].start() if i + 1 < len(marks) else len(text)].strip()
               for i, m in enumerate(marks)]
    return stem.strip(), choices


def mmstar(row: dict) -> Converted:
    question = _text(row, "question")
    letter = _text(row, "answer").upper()
    meta = {"answer_letter": letter, "mmstar_category": row.get("category"), "l2_category": row.get("l2_category")}
    fields: dict[str, Any] = {"question": question, "meta": meta}
    parsed = parse_embedded_options(question)
    if parsed:
        fields["choices"] = parsed[1]
        idx = ord(letter) - ord("A") if len(letter) == 1 else -1
        fields["answer"] = _pick(parsed[1], idx, "answer")
    else:  # options not recognisable: keep the letter, which is what the benchmark scores
        fields["answer"] = letter
    native = row.get("index")
    return fields, row.get("image"), None if native is None else str(native)


ADAPTERS: dict[str, Callable[[dict], Converted]] = {
    "chartqa": chartqa, "aokvqa": aokvqa, "scienceqa": scienceqa, "ai2d": ai2d,
    "mathvista": mathvista, "mmstar": mmstar,
}


# -------------------------------------------------------------------------------------------- images


def to_rgb(im):
    """The upright 8-bit RGB picture a viewer shows for ``im``, whatever mode and orientation it is stored in.

    Every consumer (processors, the vLLM worker, the teacher endpoint) then reads the same pixels; each
    step below fixes a way real releases differ from plain RGB:

    * EXIF ``Orientation`` (phone photos store pixels sideways and a tag saying how to turn them): applied,
      so the model sees the photo upright, as the annotator did;
    * transparency (``RGBA``/``LA``/``PA``, or a ``P``/``L``/``RGB`` image with a ``transparency`` entry, as
      AI2D-style diagrams are: black ink on nothing): composited onto white, as ``transformers``'
      ``convert_to_rgb`` does. A bare ``convert("RGB")`` keeps the hidden colour of transparent pixels,
      usually black, and the diagram turns black on black;
    * 16/32-bit greyscale (``I;16*``, ``I``): scaled to 8 bits (v/257, so 65535 → 255). ``convert`` clips
      instead, and a 16-bit image comes out almost all white;
    * ``L``, ``P``, ``CMYK``, ``YCbCr``, ``1``, …: ``convert("RGB")`` (PIL handles CMYK, Adobe-inverted included).
    """
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(im)
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        import numpy as np

        arr = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8), mode="L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        white.alpha_composite(rgba)
        return white.convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def save_image(value: Any, dest: Path, parquet_dir: Path | None = None) -> None:
    """Decode a parquet Image struct (or raw bytes) and write it as an RGB PNG at ``dest``.

    A struct without bytes but with a relative ``path`` is looked up next to the parquet file (how
    some releases ship images). The picture is normalised by :func:`to_rgb` (orientation, transparency,
    bit depth, colour mode) so every consumer reads the same upright RGB pixels.
    """
    from PIL import Image

    data = None
    if isinstance(value, dict):
        data = value.get("bytes")
        if data is None and value.get("path") and parquet_dir is not None:
            p = parquet_dir / value["path"]
            if p.is_file():
                data = p.read_bytes()
        if data is None:
            raise RowError("image", f"Image struct has no bytes (path={value.get('path')!r})")
    elif isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif value is None:
        raise RowError("image", "no image (null)")
    else:
        raise RowError("image", f"expected an Image struct {{bytes, path}}, got {type(value).__name__}")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            rgb = to_rgb(im)
    except Exception as e:  # any decode failure means this row's image is unusable
        raise RowError("image", f"cannot decode image ({type(e).__name__}: {e})") from e
    dest.parent.mkdir(parents=True, exist_ok=True)
    rgb.save(dest, format="PNG")


# ------------------------------------------------------------------------------------------ the driver


def parquet_files(path: str) -> list[Path]:
    """Local parquet files for a source path: a file, a directory (recursively), or an ``s3://`` prefix."""
    from srcal.run import store

    if not path:
        raise ValueError("data.sources[].path is empty: point it at a parquet file or directory (local or s3://)")
    if store.is_s3(path):
        files = store.fetch_objects(path, suffix=".parquet")
    else:
        p = Path(path)
        files = sorted(p.rglob("*.parquet")) if p.is_dir() else [p] if p.is_file() else []
    if not files:
        raise FileNotFoundError(f"{path}: no parquet files found (expected a .parquet file or a directory of them)")
    return files


def iter_parquet_rows(file: Path, columns: list[str] | None = None) -> Iterator[dict]:
    """Rows of a parquet file as dicts, a batch at a time (so 10 GB releases stream)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("reading dataset releases needs pyarrow: pip install 'srcal[data]'") from e

    pf = pq.ParquetFile(file)
    for batch in pf.iter_batches(batch_size=256, columns=columns):
        yield from batch.to_pylist()


def _safe_id(text: str) -> str:
    """A file-name-safe id; when characters had to be replaced (non-ASCII native ids), a hash of the original
    keeps ids distinct that would otherwise collide ("問1" and "題1" both become "_1")."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    digest = hashlib.sha256(text.encode()).hexdigest()
    if s != text:
        return f"{s[:60]}-{digest[:8]}"
    return s if len(s) <= 80 else s[:60] + "-" + digest[:12]


def read_source(adapter: str, path: str, *, category: str, out_dir: Path, max_rejected_share: float,
                source: str | None = None, max_rows: int = 0) -> tuple[list[dict], list[dict]]:
    """Convert one dataset source into samples, writing images to ``out_dir/images``.

    Returns (samples, rejected). ``source`` labels the samples (default: the adapter name) and prefixes
    their ids: ``<source>-<native id>`` when the dataset has one, else ``<source>-<file stem>-<row>``.
    ``max_rows`` caps the rows read (0 = all). Raises :class:`srcal.data.schema.DataError` when the
    rejected share exceeds ``max_rejected_share``.
    """
    if adapter not in ADAPTERS:
        raise ValueError(f"unknown adapter {adapter!r}; choose one of {sorted(ADAPTERS)}")
    convert = ADAPTERS[adapter]
    source = source or adapter
    samples: list[dict] = []
    rejected: list[dict] = []
    seen: set[str] = set()
    skipped: set[int] = set()  # id() of the rejected entries that are RowSkipped
    n = 0
    for file in parquet_files(path):
        for i, row in enumerate(iter_parquet_rows(file)):
            if max_rows and n >= max_rows:
                break
            n += 1
            row_id = None
            try:
                fields, image, native = convert(row)
                row_id = _safe_id(f"{source}-{native}" if native is not None else f"{source}-{file.stem}-{i}")
                if row_id in seen:
                    raise RowError("id", f"duplicate id {row_id!r} within source {source}")
                rel = f"images/{row_id}.png"
                sample = {"id": row_id, "image": rel, "category": category, "source": source, **fields}
                problems = sample_problems(sample)
                if problems:
                    raise RowError(*problems[0])
                save_image(image, out_dir / rel, file.parent)
            except RowError as e:
                rejected.append(rejected_entry(file, i, row_id, e.field, e.reason))
                if isinstance(e, RowSkipped):
                    skipped.add(id(rejected[-1]))
                continue
            seen.add(row_id)
            samples.append(sample)
    log.info("source %s (%s): %d rows read, %d samples, %d rejected (%d of them skipped by design)", source, adapter,
             n, len(samples), len(rejected), len(skipped))
    broken = [r for r in rejected if id(r) not in skipped]
    check_rejected_share(path, n - len(skipped), broken, max_rejected_share)
    return samples, rejected
