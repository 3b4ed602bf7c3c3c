"""The shapes world's text for training the tiny tokenizer: everything the models will read or write.

It sits above the world (:mod:`srcal.world.shapes`: questions, scenes, claim templates), its oracle
(:mod:`srcal.world.oracle`: short answers) and its teacher (:mod:`srcal.world.teacher`: teacher RAPs,
corruptions), which is why it is not in any of them: the oracle and the teacher read the world's
templates, and the corpus needs all three.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from srcal.world import oracle, teacher
from srcal.world.shapes import (
    BAR_TEMPLATES,
    COUNT_TEMPLATES,
    EMPTY_TEMPLATES,
    QUESTION_TEMPLATES,
    check_config,
    bar_sentence,
    cmp_sentence,
    conclusion_sentence,
    count_sentence,
    describe_scene,
    extreme_sentence,
    make_sample,
    obj_sentence,
    position_name,
    render_question,
    what_phrase,
)

if TYPE_CHECKING:  # pragma: no cover
    from srcal.config import ShapesWorldConfig


def corpus(cfg: ShapesWorldConfig, n: int, seed: int) -> list[str]:
    """Text to train the tiny BPE tokenizer on: everything the models will read or write.

    For ``n`` samples (categories 2:1:1): the question in every phrasing, teacher RAPs in several
    phrasings, the short answer, the scene description and one corrupted RAP of each kind; then one
    sentence per template and vocabulary word so rare forms (every position, colour, number) are covered
    even for small ``n``.
    """
    check_config(cfg)
    rng = random.Random(f"{seed}:corpus")
    cats = ["perception", "perception", "chart", "math"]
    texts: list[str] = []
    for i in range(n):
        sample = make_sample(cfg, cats[i % 4], rng, f"corpus-{i:05d}")
        scene, query = sample["scene"], sample["scene"]["query"]
        texts += [render_question(query, scene, k) for k in range(2)]
        texts.append(describe_scene(scene))
        texts.append(oracle.short_answer_text(sample))
        raps = [teacher.teacher_rap(sample, rng) for _ in range(2)]
        texts += raps
        for kind in teacher.CORRUPTIONS:
            texts.append(teacher.corrupt_rap(sample, raps[0], kind, rng))
    texts += _coverage_sentences(cfg)
    return texts


def _coverage_sentences(cfg: ShapesWorldConfig) -> list[str]:
    """One sentence per template and vocabulary item, so every word and number is in the corpus."""
    grid, colors, shapes_ = cfg.grid, cfg.colors, cfg.shapes
    out = []
    for r in range(grid):
        for c in range(grid):
            pos = position_name(r, c, grid)
            for i, (color, shape) in enumerate((co, sh) for co in colors for sh in shapes_):
                out.append(
                    obj_sentence({"row": r, "col": c, "color": color, "shape": shape}, grid, r + c + i)
                )
            out += [t.format(pos=pos) for t in EMPTY_TEMPLATES]
            out += [
                t.format(pos=pos) for t in QUESTION_TEMPLATES["color_at"] + QUESTION_TEMPLATES["shape_at"]
            ]
            out.append(f"Answer: {pos}")
    # numbers: every value an answer or arithmetic step can take (bar sums reach 2 * max_value - 1)
    top = max(2 * cfg.max_value, cfg.max_objects)
    for n in range(top + 1):
        out.append(f"{n} plus {n % 3} is {n + n % 3}. {n} minus {n % 2} is {n - n % 2}.\nAnswer: {n}")
        out.append(f"{n} is more than {n // 2}. {n // 2} is less than {n}.")
    for k in range(len(COUNT_TEMPLATES)):
        for n in range(cfg.max_objects + 1):
            out += [count_sentence(n, None, None, k)] + [count_sentence(n, None, s, k) for s in shapes_]
            out += [count_sentence(n, c, None, k) for c in colors]
    for k, color in enumerate(colors):
        out += [bar_sentence(color, k % cfg.max_value + 1, j) for j in range(len(BAR_TEMPLATES))]
        out += [extreme_sentence(color, ext, j) for ext in ("tallest", "shortest") for j in range(2)]
        out += [f"Answer: {color}", cmp_sentence(color, colors[k - 1], k % 2 == 0)]
    for shape in shapes_:
        out.append(f"Answer: {shape}")
    out += [conclusion_sentence(a, k) for k, a in enumerate(("yes", "no", "yes"))]
    out += ["Answer: yes", "Answer: no"]
    for templates in QUESTION_TEMPLATES.values():
        for t in templates:
            out.append(
                t.format(
                    color=colors[0],
                    shape=shapes_[0],
                    c1=colors[0],
                    c2=colors[1],
                    what=what_phrase(colors[0], None, 2),
                    s1=shapes_[0],
                    s2=shapes_[1],
                    pos="center",
                )
            )
    return out
