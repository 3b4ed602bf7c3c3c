"""The synthetic "shapes world": images with exactly known content, in the paper's 3 categories.

Why a synthetic world: no hub downloads are possible offline, yet the whole SRC method must run end to
end on a laptop CPU and show a measurable effect. Every image here comes with a *scene* (its ground truth),
so an oracle teacher can write correct rationale-answer pairs and an oracle judge can label preferences
exactly (``srcal.world.oracle``).

Two kinds of scene
------------------
* ``objects``: up to ``max_objects`` coloured shapes (circle / square / triangle) in distinct cells of a
  ``grid``×``grid`` grid. With the defaults (48 px, 3×3) a cell is 16 px, i.e. exactly 2×2 CLIP patches of
  8 px, so one object never straddles a patch boundary inside its cell (tiny LLaVA). Shapes
  keep a 15% margin inside their cell; there is no jitter, so the pixels are a pure function of the scene
  (``tests/test_shapes.py`` decodes every fact back from the pixels with a fixed rule).
* ``bars``: a bar chart of 2..``max_bars`` bars with distinct colours and distinct integer values
  1..``max_value``, left to right, on a white background with a baseline. Values are distinct so that
  "tallest"/"shortest" and "taller than" always have one answer.

Categories and question types (``scene["query"]["type"]``)
---------------------------------------------------------
* perception (objects): ``color_at``, ``shape_at`` (what is in a cell), ``exists`` (yes/no),
  ``where`` (position of a colour+shape that occurs once).
* chart (bars): ``bar_value``, ``tallest``, ``shortest``, ``compare`` (yes/no: is X taller than Y?).
* math: ``count`` (objects of a shape, of a colour, or all), ``count_sum`` (two shapes together, e.g. circles
  and squares), ``bar_sum``, ``bar_diff`` (bar arithmetic). ``math_chart_share`` of math samples use charts.

Answers are short and closed: a colour word, a shape word, a position ("top left"), a number written in
digits, or yes/no.

The world's language
--------------------
Rationales, the scene description the judge reads, and the oracle's claim parser all use the sentence
forms defined here (``OBJ_TEMPLATES``, ``COUNT_TEMPLATES``, ...). Each claim type has several phrasings so
that a model cannot satisfy the teacher by copying one template, but the vocabulary stays small and closed
(a 2-layer model must learn to produce it from pixels in minutes; a 3-layer judge must learn to check it).
``describe_scene`` states every fact with the *first* template of its type, in a fixed order (row-major
cells, bars left to right): a description in the same sentence form as the claims,
in a fixed order, is what lets a tiny judge learn to compare.

Positions are named ``top left … bottom right`` for 2×2 and 3×3 grids (``top middle``, ``middle left``,
``center`` ... on 3×3), and ``row R column C`` (1-based) for larger grids.

What a teacher rationale states (``srcal.world.oracle.required_facts``): the asked cell; the found object
(or, for "no"/zero answers, every object); each counted object then the count; the per-shape counts then
the sum; the asked bar values (all of them for tallest/shortest) then the comparison or arithmetic.
Typical length with the defaults: 23 words (median 22, p90 35), about 28 byte-level BPE tokens.

Determinism: ``generate_samples`` draws everything from ``random.Random`` seeded with the string
``"{seed}:{category}:{id_prefix}"`` and ``render_image`` is a pure function of the scene, so the same
arguments give identical dicts and identical PNG bytes, on any machine.
"""

from __future__ import annotations

import io
import random
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from srcal.config import ShapesWorldConfig

CATEGORIES = ("perception", "chart", "math")
PERCEPTION_TYPES = ("color_at", "shape_at", "exists", "where")
CHART_TYPES = ("bar_value", "tallest", "shortest", "compare")
MATH_OBJECT_TYPES = ("count", "count_sum")
MATH_CHART_TYPES = ("bar_sum", "bar_diff")

# RGB for every colour word the world may use; ``ShapesWorldConfig.colors`` picks from these.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (235, 200, 20),
    "orange": (245, 130, 20),
    "purple": (140, 40, 170),
    "cyan": (20, 190, 200),
    "pink": (245, 120, 180),
    "brown": (130, 80, 30),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
}
SHAPE_WORDS = ("circle", "square", "triangle")
BACKGROUND = (255, 255, 255)
BASELINE = (60, 60, 60)

# ---------------------------------------------------------------------------------------------------
# Sentence forms. Placeholders: {color} {shape} {pos} {n} {what} {v} {c1} {c2} {a} {b} {c} {answer}.
# The FIRST template of each list is the canonical form used by describe_scene.
# ---------------------------------------------------------------------------------------------------
OBJ_TEMPLATES = (
    "There is a {color} {shape} in the {pos}.",
    "The {pos} cell holds a {color} {shape}.",
    "A {color} {shape} is in the {pos}.",
    "In the {pos} there is a {color} {shape}.",
    "The {color} {shape} is in the {pos}.",
)
EMPTY_TEMPLATES = ("The {pos} cell is empty.", "There is nothing in the {pos}.")
# {be} is "is" for n == 1 and "are" otherwise; {what} is pluralised to agree with n; n == 0 is "no".
COUNT_TEMPLATES = (
    "There {be} {n} {what}.",
    "I count {n} {what}.",
    "That makes {n} {what}.",
    "In total there {be} {n} {what}.",
)
BAR_TEMPLATES = (
    "The {color} bar is {v}.",
    "The {color} bar has a value of {v}.",
    "The {color} bar reaches {v}.",
    "The value of the {color} bar is {v}.",
)
EXTREME_TEMPLATES = ("The {color} bar is the {ext}.", "The {ext} bar is the {color} one.")
CMP_TEMPLATES = ("The {c1} bar is {rel} than the {c2} bar.",)
NUM_CMP_TEMPLATES = ("{a} is {rel} than {b}.",)
ARITH_TEMPLATES = ("{a} {op} {b} is {c}.", "{a} {op} {b} equals {c}.")
CONCLUSION_TEMPLATES = (
    "So the answer is {answer}.",
    "The answer is {answer}.",
    "Therefore the answer is {answer}.",
)
BAR_COUNT_TEMPLATES = ("There {be} {n} bars.",)

QUESTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "color_at": ("What color is the shape in the {pos}?", "Which color does the {pos} shape have?"),
    "shape_at": ("What shape is in the {pos}?", "Which shape is in the {pos}?"),
    "exists": ("Is there a {color} {shape}?", "Is there a {color} {shape} in the image?"),
    "where": ("Where is the {color} {shape}?", "In which cell is the {color} {shape}?"),
    "bar_value": ("What is the value of the {color} bar?", "How high is the {color} bar?"),
    "tallest": ("Which bar is the tallest?", "What color is the tallest bar?"),
    "shortest": ("Which bar is the shortest?", "What color is the shortest bar?"),
    "compare": ("Is the {c1} bar taller than the {c2} bar?", "Is the {c1} bar higher than the {c2} bar?"),
    "count": ("How many {what} are there?", "How many {what} are in the image?"),
    "count_sum": (
        "How many {s1}s and {s2}s are there in total?",
        "How many {s1}s and {s2}s are there together?",
    ),
    "bar_sum": (
        "What is the {c1} bar plus the {c2} bar?",
        "What is the sum of the {c1} bar and the {c2} bar?",
    ),
    "bar_diff": (
        "What is the {c1} bar minus the {c2} bar?",
        "How much taller is the {c1} bar than the {c2} bar?",
    ),
}


# ---------------------------------------------------------------------------------------------------
# Positions
# ---------------------------------------------------------------------------------------------------
def position_name(row: int, col: int, grid: int) -> str:
    """Name of cell (row, col) in words; see the module docstring for the scheme."""
    if grid == 2:
        return f"{('top', 'bottom')[row]} {('left', 'right')[col]}"
    if grid == 3:
        if (row, col) == (1, 1):
            return "center"
        return f"{('top', 'middle', 'bottom')[row]} {('left', 'middle', 'right')[col]}"
    return f"row {row + 1} column {col + 1}"


def position_index(name: str, grid: int) -> tuple[int, int] | None:
    """Inverse of ``position_name``; None for a name that is not a cell of this grid."""
    name = " ".join(name.lower().replace("-", " ").split())
    for r in range(grid):
        for c in range(grid):
            if position_name(r, c, grid) == name:
                return (r, c)
    return None


def what_phrase(color: str | None, shape: str | None, n: int) -> str:
    """Noun phrase for a counted set: "red circles", "circle", "yellow shapes", "shapes"."""
    noun = shape or "shape"
    if n != 1:
        noun += "s"
    return f"{color} {noun}" if color else noun


# ---------------------------------------------------------------------------------------------------
# Sentences (one checkable claim each); templates are chosen by ``k`` (index) so callers control variety.
# ---------------------------------------------------------------------------------------------------
def finish_sentence(text: str) -> str:
    """Capitalise the first letter and write "an" before a vowel ("an orange circle")."""
    text = re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", text)
    return text[0].upper() + text[1:]


def obj_sentence(obj: dict, grid: int, k: int = 0) -> str:
    pos = position_name(obj["row"], obj["col"], grid)
    text = OBJ_TEMPLATES[k % len(OBJ_TEMPLATES)].format(color=obj["color"], shape=obj["shape"], pos=pos)
    return finish_sentence(text)


def count_sentence(n: int, color: str | None, shape: str | None, k: int = 0) -> str:
    what = what_phrase(color, shape, n)
    n_word = "no" if n == 0 else str(n)
    be = "is" if n == 1 else "are"
    return finish_sentence(COUNT_TEMPLATES[k % len(COUNT_TEMPLATES)].format(be=be, n=n_word, what=what))


def bar_sentence(color: str, value: int, k: int = 0) -> str:
    return BAR_TEMPLATES[k % len(BAR_TEMPLATES)].format(color=color, v=value)


def extreme_sentence(color: str, ext: str, k: int = 0) -> str:
    return EXTREME_TEMPLATES[k % len(EXTREME_TEMPLATES)].format(color=color, ext=ext)


def cmp_sentence(c1: str, c2: str, taller: bool) -> str:
    return CMP_TEMPLATES[0].format(c1=c1, c2=c2, rel="taller" if taller else "shorter")


def num_cmp_sentence(a: int, b: int) -> str:
    return NUM_CMP_TEMPLATES[0].format(a=a, b=b, rel="more" if a > b else "less")


def arith_sentence(a: int, op: str, b: int, k: int = 0) -> str:
    c = a + b if op == "plus" else a - b
    return ARITH_TEMPLATES[k % len(ARITH_TEMPLATES)].format(a=a, op=op, b=b, c=c)


def conclusion_sentence(answer: str, k: int = 0) -> str:
    return CONCLUSION_TEMPLATES[k % len(CONCLUSION_TEMPLATES)].format(answer=answer)


def describe_scene(scene: dict, include_empty: bool = False) -> str:
    """The judge's image description: every fact, canonical sentence forms, fixed order.

    Objects in row-major order, then the object count; or bars left to right, then the bar count. With
    ``include_empty`` every cell is stated ("The top middle cell is empty."), so a claim about any cell has
    a sentence about the same cell to compare with (the layout a tiny judge learns to compare most easily),
    at the cost of a longer description (grid² + 1 sentences).
    """
    return " ".join(description_sentences(scene, include_empty))


def description_sentences(scene: dict, include_empty: bool = False) -> list[str]:
    """The sentences of :func:`describe_scene`, one per fact (also the describe-first teacher's opening)."""
    if scene["kind"] == "objects":
        grid = scene["grid"]
        at = {(o["row"], o["col"]): o for o in scene["objects"]}
        parts = []
        for r in range(grid):
            for c in range(grid):
                if (r, c) in at:
                    parts.append(obj_sentence(at[(r, c)], grid, 0))
                elif include_empty:
                    parts.append(EMPTY_TEMPLATES[0].format(pos=position_name(r, c, grid)).capitalize())
        parts.append(count_sentence(len(at), None, None, 0))
    else:
        parts = [bar_sentence(b["color"], b["value"], 0) for b in scene["bars"]]
        n = len(scene["bars"])
        parts.append(BAR_COUNT_TEMPLATES[0].format(be="is" if n == 1 else "are", n=n))
    return parts


# ---------------------------------------------------------------------------------------------------
# Scenes and questions
# ---------------------------------------------------------------------------------------------------
def check_config(cfg: ShapesWorldConfig) -> None:
    unknown = [c for c in cfg.colors if c not in PALETTE]
    if unknown:
        raise ValueError(f"data.shapes.colors: unknown colour(s) {unknown}; choose from {sorted(PALETTE)}")
    bad = [s for s in cfg.shapes if s not in SHAPE_WORDS]
    if bad:
        raise ValueError(f"data.shapes.shapes: unknown shape(s) {bad}; choose from {list(SHAPE_WORDS)}")
    if len(cfg.colors) < 2 or len(cfg.shapes) < 2:
        raise ValueError(
            "data.shapes: need at least 2 colours and 2 shapes for yes/no questions to have 'no'"
        )
    if cfg.max_objects > cfg.grid * cfg.grid:
        raise ValueError(f"data.shapes.max_objects={cfg.max_objects} exceeds the {cfg.grid}x{cfg.grid} cells")
    if min(cfg.max_bars, len(cfg.colors), cfg.max_value) < 2:
        raise ValueError("data.shapes: bar charts need max_bars, len(colors) and max_value all >= 2")


def _object_scene(cfg: ShapesWorldConfig, rng: random.Random) -> dict:
    cells = [(r, c) for r in range(cfg.grid) for c in range(cfg.grid)]
    n = rng.randint(min(cfg.min_objects, cfg.max_objects), cfg.max_objects)
    chosen = sorted(rng.sample(cells, n))
    objects = [
        {"row": r, "col": c, "color": rng.choice(cfg.colors), "shape": rng.choice(cfg.shapes)}
        for r, c in chosen
    ]
    return {"kind": "objects", "grid": cfg.grid, "objects": objects, "vocab": _vocab(cfg)}


def _bar_scene(cfg: ShapesWorldConfig, rng: random.Random) -> dict:
    n = rng.randint(2, min(cfg.max_bars, len(cfg.colors), cfg.max_value))
    colors = rng.sample(cfg.colors, n)
    values = rng.sample(range(1, cfg.max_value + 1), n)
    return {
        "kind": "bars",
        "max_value": cfg.max_value,
        "bars": [{"color": c, "value": v} for c, v in zip(colors, values)],
        "vocab": _vocab(cfg),
    }


def _vocab(cfg: ShapesWorldConfig) -> dict:
    """The world's words, kept in the scene so the oracle can build plausible wrong claims without cfg."""
    return {
        "colors": list(cfg.colors),
        "shapes": list(cfg.shapes),
        "grid": cfg.grid,
        "max_value": cfg.max_value,
    }


def matching_objects(objects: list[dict], color: str | None, shape: str | None) -> list[dict]:
    """Objects of the given colour and shape; ``None`` matches any (a count query may name only one)."""
    return [
        o for o in objects if (color is None or o["color"] == color) and (shape is None or o["shape"] == shape)
    ]


def _count(scene: dict, color: str | None, shape: str | None) -> int:
    return len(matching_objects(scene["objects"], color, shape))


def _perception_query(scene: dict, cfg: ShapesWorldConfig, rng: random.Random) -> tuple[dict, str]:
    objs, grid = scene["objects"], scene["grid"]
    qtype = rng.choice(PERCEPTION_TYPES)
    if qtype == "where":
        kinds = [(o["color"], o["shape"]) for o in objs]
        unique = [k for k in kinds if kinds.count(k) == 1]
        if not unique:
            qtype = "color_at"
        else:
            color, shape = rng.choice(unique)
            obj = next(o for o in objs if (o["color"], o["shape"]) == (color, shape))
            return {"type": "where", "color": color, "shape": shape}, position_name(
                obj["row"], obj["col"], grid
            )
    if qtype in ("color_at", "shape_at"):
        obj = rng.choice(objs)
        answer = obj["color"] if qtype == "color_at" else obj["shape"]
        return {"type": qtype, "row": obj["row"], "col": obj["col"]}, answer
    # exists: half yes, half no
    present = {(o["color"], o["shape"]) for o in objs}
    absent = [(c, s) for c in cfg.colors for s in cfg.shapes if (c, s) not in present]
    if absent and rng.random() < 0.5:
        color, shape = rng.choice(absent)
        return {"type": "exists", "color": color, "shape": shape}, "no"
    color, shape = rng.choice(sorted(present))
    return {"type": "exists", "color": color, "shape": shape}, "yes"


def _chart_query(scene: dict, rng: random.Random, types=CHART_TYPES) -> tuple[dict, str]:
    bars = scene["bars"]
    qtype = rng.choice(types)
    if qtype == "bar_value":
        b = rng.choice(bars)
        return {"type": qtype, "color": b["color"]}, str(b["value"])
    if qtype in ("tallest", "shortest"):
        pick = max if qtype == "tallest" else min
        return {"type": qtype}, pick(bars, key=lambda b: b["value"])["color"]
    b1, b2 = rng.sample(bars, 2)
    if qtype == "compare":
        return {"type": qtype, "c1": b1["color"], "c2": b2["color"]}, "yes" if b1["value"] > b2[
            "value"
        ] else "no"
    if qtype == "bar_sum":
        return {"type": qtype, "c1": b1["color"], "c2": b2["color"]}, str(b1["value"] + b2["value"])
    # bar_diff: larger minus smaller, so answers stay non-negative
    if b1["value"] < b2["value"]:
        b1, b2 = b2, b1
    return {"type": "bar_diff", "c1": b1["color"], "c2": b2["color"]}, str(b1["value"] - b2["value"])


def _math_object_query(scene: dict, cfg: ShapesWorldConfig, rng: random.Random) -> tuple[dict, str]:
    qtype = rng.choice(MATH_OBJECT_TYPES)
    if qtype == "count_sum" and len(cfg.shapes) >= 2:
        s1, s2 = rng.sample(cfg.shapes, 2)
        return (
            {"type": "count_sum", "s1": s1, "s2": s2},
            str(_count(scene, None, s1) + _count(scene, None, s2)),
        )
    # count: by shape, by colour or all; biased towards kinds present so most answers are not 0
    mode = rng.choice(("shape", "color", "all"))
    obj = rng.choice(scene["objects"])
    color = shape = None
    if mode == "shape":
        shape = obj["shape"] if rng.random() < 0.8 else rng.choice(cfg.shapes)
    elif mode == "color":
        color = obj["color"] if rng.random() < 0.8 else rng.choice(cfg.colors)
    return {"type": "count", "color": color, "shape": shape}, str(_count(scene, color, shape))


def render_question(query: dict, scene: dict, k: int = 0) -> str:
    """The question for ``query`` in phrasing ``k``."""
    t = query["type"]
    tmpl = QUESTION_TEMPLATES[t][k % len(QUESTION_TEMPLATES[t])]
    if t in ("color_at", "shape_at"):
        return tmpl.format(pos=position_name(query["row"], query["col"], scene["grid"]))
    if t == "count":
        return tmpl.format(what=what_phrase(query["color"], query["shape"], 2))
    return tmpl.format(**{k2: v for k2, v in query.items() if k2 != "type"})


def make_sample(cfg: ShapesWorldConfig, category: str, rng: random.Random, sample_id: str) -> dict:
    """One sample dict (schema in docs/architecture.md) with its scene; the image is rendered separately."""
    if category == "perception":
        scene = _object_scene(cfg, rng)
        query, answer = _perception_query(scene, cfg, rng)
    elif category == "chart":
        scene = _bar_scene(cfg, rng)
        query, answer = _chart_query(scene, rng)
    elif category == "math":
        if rng.random() < cfg.math_chart_share:
            scene = _bar_scene(cfg, rng)
            query, answer = _chart_query(scene, rng, MATH_CHART_TYPES)
        else:
            scene = _object_scene(cfg, rng)
            query, answer = _math_object_query(scene, cfg, rng)
    else:
        raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")
    scene["query"] = query
    question = render_question(query, scene, rng.randrange(2))
    return {
        "id": sample_id,
        "image": f"images/{sample_id}.png",
        "question": question,
        "answer": answer,
        "category": category,
        "source": "shapes",
        "scene": scene,
    }


def _sample_id(id_prefix: str, i: int) -> str:
    sep = "" if not id_prefix or id_prefix[-1] in "-_/" else "-"
    return f"{id_prefix}{sep}{i:05d}"


def generate_samples(
    cfg: ShapesWorldConfig, n: int, category: str, seed: int, id_prefix: str
) -> list[tuple[dict, Image.Image]]:
    """``n`` samples of one category with their rendered images; deterministic in all arguments.

    Ids are ``f"{id_prefix}-{i:05d}"`` (no extra ``-`` when the prefix already ends in ``-``, ``_`` or ``/``);
    the image path is ``images/<id>.png`` relative to the split's directory. No ``choices`` key: every
    question is open-ended with a one-word (or position) answer.
    """
    check_config(cfg)
    rng = random.Random(f"{seed}:{category}:{id_prefix}")
    out = []
    for i in range(n):
        sample = make_sample(cfg, category, rng, _sample_id(id_prefix, i))
        out.append((sample, render_image(sample["scene"], cfg)))
    return out


# ---------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------
def render_image(scene: dict, cfg: ShapesWorldConfig) -> Image.Image:
    """Draw ``scene`` as an RGB ``cfg.image_size`` square; a pure function of (scene, image_size)."""
    from PIL import Image, ImageDraw

    size = cfg.image_size
    img = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    if scene["kind"] == "objects":
        grid = scene["grid"]
        cell = size / grid
        pad = max(1, round(cell * 0.15))
        for o in scene["objects"]:
            x0, y0 = round(o["col"] * cell) + pad, round(o["row"] * cell) + pad
            x1, y1 = round((o["col"] + 1) * cell) - pad - 1, round((o["row"] + 1) * cell) - pad - 1
            fill = PALETTE[o["color"]]
            if o["shape"] == "circle":
                draw.ellipse([x0, y0, x1, y1], fill=fill)
            elif o["shape"] == "square":
                draw.rectangle([x0, y0, x1, y1], fill=fill)
            else:
                draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    elif scene["kind"] == "bars":
        bars = scene["bars"]
        top, bottom = 2, size - 3
        slot = size / len(bars)
        unit = (bottom - top) / scene["max_value"]
        for i, b in enumerate(bars):
            x0 = round(i * slot + slot * 0.2)
            x1 = round((i + 1) * slot - slot * 0.2) - 1
            y0 = round(bottom - b["value"] * unit)
            draw.rectangle([x0, y0, x1, bottom - 1], fill=PALETTE[b["color"]])
        draw.line([(0, bottom), (size - 1, bottom)], fill=BASELINE)
    else:
        raise ValueError(f"unknown scene kind {scene.get('kind')!r}")
    return img


def png_bytes(img: Image.Image) -> bytes:
    """PNG encoding with fixed settings (no metadata), so identical images give identical bytes."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()
