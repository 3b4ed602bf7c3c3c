"""Which samples the shapes world knows, and what its oracle says about a response to one of them.

Method code (RFT, evaluation, curation) asks these questions instead of testing ``sample["scene"]``
itself: a shapes-world sample carries its scene, so the oracle can check every claim of a response; a
real-data sample does not, and the same code then measures only what real data allows.
"""

from __future__ import annotations

from typing import Any


def in_shapes_world(sample: dict[str, Any]) -> bool:
    """True for a sample the shapes world generated (it carries its scene, so the oracle knows every fact)."""
    return isinstance(sample.get("scene"), dict)


def oracle_assessment(sample: dict[str, Any], text: str, prefix: str = "Answer:"):
    """The oracle's :class:`srcal.data.oracle.Assessment` of ``text`` for a shapes-world sample; None for
    any other sample (no scene: nothing to check claims against)."""
    if not in_shapes_world(sample):
        return None
    from srcal.data import oracle

    return oracle.assess(sample, text, prefix)
