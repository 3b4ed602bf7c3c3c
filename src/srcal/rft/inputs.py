"""The data artifact as stage 1 reads it: a split's usable rows, and one image decoded to RGB."""

from __future__ import annotations

from pathlib import Path


def read_split(data_dir: Path, name: str, max_rejected_share: float,
               max_prompt_chars: int = 0) -> tuple[list[dict], list[dict]]:
    """Rows of ``<name>.jsonl`` whose images exist and decode and whose prompt is within
    ``max_prompt_chars``; the rest are quarantined (rejected) before the teacher or a tokenizer sees them."""
    from srcal.data.schema import read_jsonl

    path = data_dir / f"{name}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: the data artifact has no '{name}' split (run `srcal data build`)")
    return read_jsonl(path, images_root=data_dir, max_rejected_share=max_rejected_share,
                      max_prompt_chars=max_prompt_chars)


def load_image(data_dir: Path, rel: str):
    from PIL import Image

    with Image.open(data_dir / rel) as im:
        return im.convert("RGB")
