"""Parquet releases shaped like the real ones: the images and text that public VQA releases actually carry.

``conftest.write_vqa_parquet`` writes each adapter's real column names and arrow types with 8×6 RGB PNGs
and ASCII text. Real releases are messier, and each of these has broken a data path somewhere:

* sizes and aspect ratios: wide (1024×576) beside tall (480×640) in one batch, ~1000 px squares, tiny
  icons; LLaVA-NeXT's anyres tiling and Qwen2.5-VL's dynamic resolution give them different token counts;
* modes: greyscale ``L`` (scanned documents), ``RGBA`` and palette ``P`` PNGs with a transparent background
  (AI2D-style diagrams: black ink on nothing, so dropping alpha gives black on black), 16-bit greyscale
  (``I;16``), CMYK JPEGs (print sources), and JPEGs whose pixels are stored sideways with an EXIF
  ``Orientation`` tag (phone photos);
* text: accents, CJK, Greek, Hebrew, emoji and typographic quotes in questions, options and answers.

:func:`write_release` reuses ``write_vqa_parquet`` for the schema and rows, then swaps in those images and
that text and shards the rows the way the hub does (``data/train-0000k-of-0000n.parquet``). Everything is
deterministic (no RNG), so a failing test reproduces.

Each image kind is drawn with a marker whose place in the *upright* picture is known (:func:`marker_box`):
a red square at the top-left corner for RGB kinds, so a test can tell a correctly rotated EXIF image from
a sideways one, and a transparent background for the alpha kinds, which must come out white.
"""

from __future__ import annotations

import io
from pathlib import Path

from conftest import write_vqa_parquet

# kind -> (stored width, height, PIL mode, format). The EXIF kind is *stored* 640×480 and displays 480×640.
IMAGE_KINDS: dict[str, tuple[int, int, str, str]] = {
    "wide": (1024, 576, "RGB", "JPEG"),
    "tall": (480, 640, "RGB", "JPEG"),
    "grey": (640, 480, "L", "PNG"),
    "rgba": (800, 600, "RGBA", "PNG"),
    "palette": (700, 500, "P", "PNG"),
    "cmyk": (500, 400, "CMYK", "JPEG"),
    "exif": (640, 480, "RGB", "JPEG"),
    "square": (1000, 1000, "RGB", "PNG"),
    "grey16": (320, 240, "I;16", "PNG"),
    "icon": (28, 20, "RGB", "PNG"),
}
KINDS = list(IMAGE_KINDS)
RED = (230, 20, 20)


def upright_size(kind: str, scale: float = 1.0) -> tuple[int, int]:
    """(width, height) as a viewer shows the image: the EXIF kind is rotated a quarter turn."""
    w, h, _, _ = IMAGE_KINDS[kind]
    w, h = max(8, round(w * scale)), max(8, round(h * scale))
    return (h, w) if kind == "exif" else (w, h)


def marker_box(kind: str, scale: float = 1.0) -> tuple[int, int, int, int]:
    """The red marker square (left, top, right, bottom) in the upright picture: the top-left eighth."""
    w, h = upright_size(kind, scale)
    return 0, 0, max(2, w // 8), max(2, h // 8)


def real_image(kind: str, i: int = 0, scale: float = 1.0) -> bytes:
    """Encoded bytes of one image of ``kind``; ``i`` varies the content (bar count and shades)."""
    from PIL import Image, ImageDraw

    w, h, mode, fmt = IMAGE_KINDS[kind]
    w, h = max(8, round(w * scale)), max(8, round(h * scale))
    uw, uh = upright_size(kind, scale)
    shade = (40 + 23 * i) % 200
    if kind in ("rgba", "palette"):  # black ink on a transparent background (a diagram)
        im = Image.new("RGBA", (uw, uh), (0, 0, 0, 0))
        d = ImageDraw.Draw(im)
        d.rectangle((uw // 4, uh // 4, 3 * uw // 4, 3 * uh // 4), outline=(0, 0, 0, 255), width=max(1, uw // 50))
        d.line((0, uh - 1, uw - 1, 0), fill=(0, 0, 0, 255), width=max(1, uw // 80))
        if kind == "palette":
            im = im.convert("RGBA").quantize(colors=4)  # palette image; transparency index set below
    else:
        im = Image.new("RGB", (uw, uh), (245, 240 - shade // 4, 220))
        d = ImageDraw.Draw(im)
        bars = 2 + i % 5
        for b in range(bars):  # a bar chart, the commonest real content here
            x0 = uw // 4 + b * (uw // 2) // bars
            d.rectangle((x0, uh // 3 + (b * 17 + i * 7) % (uh // 3), x0 + max(1, uw // (3 * bars)), uh - 4),
                        fill=(shade, 90, 200 - shade // 2))
        d.rectangle(marker_box(kind, scale), fill=RED)
        if kind == "exif":  # store it sideways; Orientation 6 tells viewers to turn it back
            im = im.transpose(Image.Transpose.ROTATE_90)
        elif kind in ("grey", "grey16"):
            im = im.convert("L")
        elif kind == "cmyk":
            im = im.convert("CMYK")
    assert im.size == (w, h), (kind, im.size, (w, h))
    buf = io.BytesIO()
    if kind == "exif":
        exif = Image.Exif()
        exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
        im.save(buf, format=fmt, quality=90, exif=exif.tobytes())
    elif kind == "palette":
        import numpy as np

        alpha = np.asarray(im.convert("RGBA").getchannel("A"))
        clear = int(np.asarray(im)[alpha == 0][0])  # the palette index the transparent pixels use
        im.save(buf, format=fmt, transparency=clear)
    elif kind == "grey16":
        import numpy as np

        arr = (np.asarray(im, dtype=np.uint16) * 257).astype(np.uint16)  # 8 → 16 bits: v·257 (255 → 65535)
        Image.fromarray(arr).save(buf, format=fmt)
    elif fmt == "JPEG":
        im.save(buf, format=fmt, quality=90)
    else:
        im.save(buf, format=fmt)
    return buf.getvalue()


# -------------------------------------------------------------------------------------------------- text

WORDS = ["café", "naïve", "東京", "Ελλάδα", "עברית", "🚲", "“quoted”", "Straße", "½ cup", "ñandú"]

# Unicode options that replace the ASCII ones of write_vqa_parquet, per adapter (same count, same order).
_OPTIONS = {
    "aokvqa": ["vélo", "manger", "寝る", "lire 📖"],
    "scienceqa": ["nord ↑", "süd ↓"],
    "ai2d": ["œuf", "larve", "nymphe", "adulte"],
}
_MMSTAR_OPTIONS = "A: une balle rouge, ronde, B: 立方体, C: ein Kegel, D: nada"
_MMSTAR_CHOICES = ["une balle rouge, ronde", "立方体", "ein Kegel", "nada"]


def _unicode_row(adapter: str, row: dict, i: int) -> dict:
    """``row`` with Unicode question/options/answers; the right answer stays the same index/letter."""
    w = WORDS[i % len(WORDS)]
    row = dict(row)
    if adapter == "chartqa":
        row["query"] = f"What is the value of «{w}» in bar {i}?"
        if i % 3 == 2:
            row["label"] = [f"Côte d’Ivoire {w}"]
    elif adapter == "chartqa-lmms":
        row["question"] = f"Which year peaks for “{w}” ({i})?"
    elif adapter in ("aokvqa", "scienceqa", "ai2d"):
        row["question"] = f"{row['question']} — {w}"
        row["choices" if adapter != "ai2d" else "options"] = list(_OPTIONS[adapter])
        if adapter == "aokvqa":
            row["rationales"] = [f"L’objet {i} est un vélo ({w}).", "Les gens font du vélo."]
        if adapter == "scienceqa" and row.get("hint"):
            row["hint"] = f"Deux aimants — 磁石 {w}."
    elif adapter == "mmstar":
        stem = f"Quelle option décrit l’image {i} ({w})?"
        row["question"] = f"{stem}\nOptions: {_MMSTAR_OPTIONS}"
    elif adapter == "mathvista":
        row["question"] = f"Combien d’objets restent ({w}, {i})?"
    return row


def unicode_answer(adapter: str, i: int) -> str:
    """The answer text row ``i`` of :func:`write_release` must convert to (for the tests' checks)."""
    if adapter == "chartqa":
        return f"Côte d’Ivoire {WORDS[i % len(WORDS)]}" if i % 3 == 2 else str(i * 10)
    if adapter == "aokvqa":
        return _OPTIONS["aokvqa"][i % 4]
    if adapter == "scienceqa":
        return _OPTIONS["scienceqa"][i % 2]
    if adapter == "ai2d":
        return _OPTIONS["ai2d"][i % 4]
    if adapter == "mmstar":
        return _MMSTAR_CHOICES[i % 4]
    raise ValueError(adapter)


# ---------------------------------------------------------------------------------------------- releases

_IMAGE_COL = {"mathvista": "decoded_image"}


def write_release(adapter: str, root: Path, n: int, *, shards: int = 2, bad: bool = False, scale: float = 1.0,
                  kinds: list[str] | None = None, split: str = "train") -> list[Path]:
    """Write ``n`` rows (+ 2 bad ones when ``bad``) of ``adapter``'s release under ``root/data/``.

    Row ``i`` gets image kind ``kinds[i % len(kinds)]`` (default: every kind in :data:`IMAGE_KINDS` order)
    scaled by ``scale``, Unicode text (:func:`unicode_answer` gives its answer), and lands in shard
    ``i * shards // n`` named like the hub's ``data/<split>-0000k-of-0000n.parquet``. Returns the files.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    kinds = kinds or KINDS
    tmp = Path(root) / ".plain.parquet"
    write_vqa_parquet(adapter, tmp, n, bad=bad)
    table = pq.read_table(tmp)
    tmp.unlink()
    rows = table.to_pylist()
    col = _IMAGE_COL.get(adapter, "image")
    for i, row in enumerate(rows[:n]):
        kind = kinds[i % len(kinds)]
        ext = "jpg" if IMAGE_KINDS[kind][3] == "JPEG" else "png"
        rows[i] = _unicode_row(adapter, row, i)
        rows[i][col] = {"bytes": real_image(kind, i, scale), "path": None if i % 2 else f"{i:05d}.{ext}"}
    files = []
    shards = max(1, min(shards, len(rows)))
    bounds = [len(rows) * k // shards for k in range(shards + 1)]
    for k in range(shards):
        f = Path(root) / "data" / f"{split}-{k:05d}-of-{shards:05d}.parquet"
        f.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows[bounds[k]:bounds[k + 1]], schema=table.schema), f,
                       row_group_size=4)
        files.append(f)
    return files


# The adapters and categories the shipped real recipes read (llava-1.5-7b, llava-next-8b, qwen2.5-vl-7b).
RECIPE_SOURCES = [("aokvqa", "perception", None), ("scienceqa", "math", None), ("chartqa", "chart", None),
                  ("ai2d", "math", None), ("mmstar", "perception", "eval")]


def write_recipe_sources(root: Path, n: int = 8, **kw) -> list[Path]:
    """One release directory per source of the real recipes, in the recipes' ``data.sources`` order."""
    dirs = []
    for adapter, _, _ in RECIPE_SOURCES:
        d = Path(root) / adapter
        write_release(adapter, d, n, split="val" if adapter == "mmstar" else "train", **kw)
        dirs.append(d)
    return dirs
