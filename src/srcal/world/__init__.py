"""The shapes world: synthetic samples whose every fact is known, so rationales can be measured exactly.

This package's own functions are the interface method code calls: which samples the shapes world knows
(:func:`in_shapes_world`), and what its oracle says about a response to one of them
(:func:`oracle_assessment`). Method code (RFT, evaluation, curation) asks these questions instead of
testing ``sample["scene"]`` itself: a shapes-world sample carries its scene, so the oracle can check every
claim of a response; a real-data sample does not, and the same code then measures only what real data
allows. They import nothing at module level, so asking costs nothing on real data.

The world itself: :mod:`~srcal.world.shapes` (scenes, images, questions, claim templates),
:mod:`~srcal.world.oracle` (claims read back, assessment, the oracle judge), :mod:`~srcal.world.teacher`
(teacher RAPs, corruptions), :mod:`~srcal.world.corpus` (the tiny tokenizer's training text).
"""

from __future__ import annotations

from typing import Any


def in_shapes_world(sample: dict[str, Any]) -> bool:
    """True for a sample the shapes world generated (it carries its scene, so the oracle knows every fact)."""
    return isinstance(sample.get("scene"), dict)


def oracle_assessment(sample: dict[str, Any], text: str, prefix: str = "Answer:"):
    """The oracle's :class:`srcal.world.oracle.Assessment` of ``text`` for a shapes-world sample; None for
    any other sample (no scene: nothing to check claims against)."""
    if not in_shapes_world(sample):
        return None
    from srcal.world import oracle

    return oracle.assess(sample, text, prefix)
