"""The shapes world: determinism, categories, answers that follow from the scene, images, corpus."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from srcal.config import ShapesWorldConfig
from srcal.world import shapes
from srcal.world.corpus import corpus
from srcal.world.shapes import (
    describe_scene,
    generate_samples,
    png_bytes,
    position_index,
    position_name,
    render_image,
)


@pytest.fixture(scope="module")
def cfg():
    return ShapesWorldConfig()


def _solve(scene: dict) -> str:
    """Independent re-derivation of the gold answer from the scene (not shapes' own code path)."""
    q, t = scene["query"], scene["query"]["type"]
    objs = scene.get("objects", [])
    bars = {b["color"]: b["value"] for b in scene.get("bars", [])}
    at = {(o["row"], o["col"]): o for o in objs}
    if t == "color_at":
        return at[(q["row"], q["col"])]["color"]
    if t == "shape_at":
        return at[(q["row"], q["col"])]["shape"]
    if t == "exists":
        return "yes" if any(o["color"] == q["color"] and o["shape"] == q["shape"] for o in objs) else "no"
    if t == "where":
        (o,) = [o for o in objs if o["color"] == q["color"] and o["shape"] == q["shape"]]
        return position_name(o["row"], o["col"], scene["grid"])
    if t == "count":
        return str(
            sum((q["color"] in (None, o["color"])) and (q["shape"] in (None, o["shape"])) for o in objs)
        )
    if t == "count_sum":
        return str(sum(o["shape"] in (q["s1"], q["s2"]) for o in objs))
    if t == "bar_value":
        return str(bars[q["color"]])
    if t == "tallest":
        return max(bars, key=bars.get)
    if t == "shortest":
        return min(bars, key=bars.get)
    if t == "compare":
        return "yes" if bars[q["c1"]] > bars[q["c2"]] else "no"
    if t == "bar_sum":
        return str(bars[q["c1"]] + bars[q["c2"]])
    if t == "bar_diff":
        return str(bars[q["c1"]] - bars[q["c2"]])
    raise AssertionError(t)


def test_same_seed_same_samples_and_png_bytes(cfg):
    a = generate_samples(cfg, 30, "perception", 7, "rft")
    b = generate_samples(cfg, 30, "perception", 7, "rft")
    assert [s for s, _ in a] == [s for s, _ in b]
    assert [png_bytes(im) for _, im in a] == [png_bytes(im) for _, im in b]


def test_prefix_stable(cfg):
    """Asking for more samples returns the same first ones (data.build over-generates and relies on it)."""
    few = generate_samples(cfg, 10, "math", 3, "p")
    many = generate_samples(cfg, 25, "math", 3, "p")
    assert [s for s, _ in few] == [s for s, _ in many[:10]]


def test_different_seed_or_prefix_differs(cfg):
    a = [s["scene"] for s, _ in generate_samples(cfg, 20, "chart", 1, "rft")]
    b = [s["scene"] for s, _ in generate_samples(cfg, 20, "chart", 2, "rft")]
    c = [s["scene"] for s, _ in generate_samples(cfg, 20, "chart", 1, "calib")]
    assert a != b and a != c


def test_schema_ids_and_paths(cfg):
    samples = generate_samples(cfg, 5, "math", 0, "eval")
    s, img = samples[3]
    assert s["id"] == "eval-00003" and s["image"] == "images/eval-00003.png"
    assert set(s) == {"id", "image", "question", "answer", "category", "source", "scene"}
    assert s["source"] == "shapes" and s["category"] == "math"
    assert img.size == (cfg.image_size, cfg.image_size) and img.mode == "RGB"
    assert generate_samples(cfg, 1, "math", 0, "rft-")[0][0]["id"] == "rft-00000"
    import json

    json.dumps(s)  # JSON-able


@pytest.mark.parametrize(
    "category,types",
    [
        ("perception", set(shapes.PERCEPTION_TYPES)),
        ("chart", set(shapes.CHART_TYPES)),
        ("math", set(shapes.MATH_OBJECT_TYPES + shapes.MATH_CHART_TYPES)),
    ],
)
def test_categories_cover_their_question_types_with_correct_answers(cfg, category, types):
    samples = [s for s, _ in generate_samples(cfg, 300, category, 0, category)]
    seen = Counter(s["scene"]["query"]["type"] for s in samples)
    assert set(seen) == types, seen
    for s in samples:
        assert s["category"] == category
        assert s["answer"] == _solve(s["scene"]), s
        assert re.fullmatch(r"[a-z0-9 ]+", s["answer"])  # short, closed answers
    answers = Counter(s["answer"] for s in samples)
    assert answers.most_common(1)[0][1] < 0.35 * len(samples)  # no answer dominates


def test_yes_no_balanced(cfg):
    samples = [s for s, _ in generate_samples(cfg, 400, "perception", 3, "p")]
    yn = Counter(s["answer"] for s in samples if s["scene"]["query"]["type"] == "exists")
    assert yn["yes"] > 20 and yn["no"] > 20


def test_scene_constraints(cfg):
    for s, _ in generate_samples(cfg, 200, "perception", 4, "p"):
        objs = s["scene"]["objects"]
        cells = [(o["row"], o["col"]) for o in objs]
        assert len(set(cells)) == len(cells) and 1 <= len(objs) <= cfg.max_objects
    for s, _ in generate_samples(cfg, 200, "chart", 4, "c"):
        bars = s["scene"]["bars"]
        assert 2 <= len(bars) <= cfg.max_bars
        assert len({b["color"] for b in bars}) == len(bars) and len({b["value"] for b in bars}) == len(bars)
        assert all(1 <= b["value"] <= cfg.max_value for b in bars)


def test_unknown_category_and_colour_fail_clearly(cfg):
    with pytest.raises(ValueError, match="unknown category"):
        generate_samples(cfg, 1, "science", 0, "x")
    with pytest.raises(ValueError, match="unknown colour"):
        generate_samples(ShapesWorldConfig(colors=["red", "mauve"]), 1, "chart", 0, "x")


def test_render_objects_pixels(cfg):
    """A red square in the top-left 16-px cell: its centre pixel is red, another cell's centre is white."""
    scene = {
        "kind": "objects",
        "grid": 3,
        "objects": [{"row": 0, "col": 0, "color": "red", "shape": "square"}],
    }
    img = render_image(scene, cfg)
    assert img.getpixel((8, 8)) == shapes.PALETTE["red"]
    assert img.getpixel((24, 24)) == shapes.BACKGROUND
    assert img.getpixel((0, 0)) == shapes.BACKGROUND  # padding keeps shapes off cell borders


def test_render_bar_heights_proportional(cfg):
    scene = {
        "kind": "bars",
        "max_value": 9,
        "bars": [{"color": "blue", "value": 9}, {"color": "red", "value": 3}],
    }
    img = render_image(scene, cfg)

    def height(x):
        return sum(img.getpixel((x, y)) != shapes.BACKGROUND for y in range(cfg.image_size - 3))

    h_blue, h_red = height(12), height(36)
    assert h_blue == pytest.approx(3 * h_red, abs=2)


def test_positions_roundtrip():
    for grid in (2, 3, 4):
        names = {position_name(r, c, grid) for r in range(grid) for c in range(grid)}
        assert len(names) == grid * grid
        for r in range(grid):
            for c in range(grid):
                assert position_index(position_name(r, c, grid), grid) == (r, c)
    assert position_name(1, 1, 3) == "center" and position_index("Top-Left", 3) == (0, 0)
    assert position_index("center", 2) is None


def test_describe_scene_fixed_order():
    scene = {
        "kind": "objects",
        "grid": 3,
        "objects": [
            {"row": 2, "col": 2, "color": "blue", "shape": "circle"},
            {"row": 0, "col": 1, "color": "red", "shape": "triangle"},
        ],
    }
    assert describe_scene(scene) == (
        "There is a red triangle in the top middle. "
        "There is a blue circle in the bottom right. There are 2 shapes."
    )
    full = describe_scene({"kind": "objects", "grid": 2, "objects": scene["objects"][1:]}, include_empty=True)
    assert full == (
        "The top left cell is empty. There is a red triangle in the top right. The bottom left cell is empty. "
        "The bottom right cell is empty. There is 1 shape."
    )
    bars = {"kind": "bars", "bars": [{"color": "green", "value": 4}, {"color": "red", "value": 1}]}
    assert describe_scene(bars) == "The green bar is 4. The red bar is 1. There are 2 bars."


def test_corpus_covers_vocabulary_and_is_deterministic(cfg):
    texts = corpus(cfg, 60, 0)
    assert texts == corpus(cfg, 60, 0)
    words = set(re.findall(r"[a-z]+|\d+", " ".join(texts).lower()))
    for w in (
        cfg.colors + cfg.shapes + ["answer", "plus", "minus", "tallest", "shortest", "yes", "no", "center"]
    ):
        assert w in words, w
    for n in range(2 * cfg.max_value + 1):
        assert str(n) in words
    assert len(words) < 120  # a small, closed vocabulary
    assert any(t.endswith("Answer: yes") for t in texts)


def test_generation_is_fast(cfg):
    import time

    t0 = time.perf_counter()
    generate_samples(cfg, 200, "perception", 0, "speed")
    assert time.perf_counter() - t0 < 5.0


def test_small_corpus_already_covers_every_word_the_world_uses(cfg):
    """The coverage sentences make the vocabulary closed even for a tiny corpus: every word of 600 fresh
    questions, descriptions and teacher/corrupted RAPs occurs in corpus(n=10)."""
    import random

    from srcal.world import teacher

    vocab = set(re.findall(r"[A-Za-z]+|\d+", " ".join(corpus(cfg, 10, 5))))
    rng = random.Random(0)
    for cat in shapes.CATEGORIES:
        for s, _ in generate_samples(cfg, 200, cat, 9, "cov"):
            rap = teacher.teacher_rap(s, rng)
            texts = [s["question"], describe_scene(s["scene"]), rap]
            texts += [teacher.corrupt_rap(s, rap, k, rng) for k in teacher.CORRUPTIONS]
            missing = set(re.findall(r"[A-Za-z]+|\d+", " ".join(texts))) - vocab
            assert not missing, (missing, texts)


def _decode(img, scene, cfg):
    """Read the scene back from pixels (no learning): proves every fact a question asks is visible.

    Objects: the cell centre's colour names the colour; the share of the cell's padded box that is
    filled names the shape (square ≈ 1, circle ≈ π/4, triangle ≈ 1/2). Bars: filled height / unit.
    """
    rgb_to_name = {v: k for k, v in shapes.PALETTE.items()}
    size = cfg.image_size
    if scene["kind"] == "objects":
        g = scene["grid"]
        cell = size // g
        found = []
        for r in range(g):
            for c in range(g):
                centre = img.getpixel((c * cell + cell // 2, r * cell + cell // 2))
                if centre == shapes.BACKGROUND:
                    continue
                box = [
                    (x, y) for x in range(c * cell, (c + 1) * cell) for y in range(r * cell, (r + 1) * cell)
                ]
                filled = sum(img.getpixel(p) != shapes.BACKGROUND for p in box)
                side = cell - 2 * max(1, round(cell * 0.15))
                share = filled / side**2
                shape = "square" if share > 0.9 else "circle" if share > 0.65 else "triangle"
                found.append({"row": r, "col": c, "color": rgb_to_name[centre], "shape": shape})
        return found
    bars, slot = [], size / len(scene["bars"])
    unit = (size - 3 - 2) / scene["max_value"]
    for i in range(len(scene["bars"])):
        x = int(i * slot + slot / 2)
        column = [img.getpixel((x, y)) for y in range(size - 3)]
        height = sum(p != shapes.BACKGROUND for p in column)
        colour = next(p for p in column if p != shapes.BACKGROUND)
        bars.append({"color": rgb_to_name[colour], "value": round(height / unit)})
    return bars


def test_images_show_every_fact(cfg):
    """The rendering is unambiguous at 48 px: a fixed pixel decoder recovers all objects and bar values."""
    for cat in ("perception", "chart"):
        for s, img in generate_samples(cfg, 150, cat, 21, "dec"):
            scene = s["scene"]
            want = scene["objects"] if scene["kind"] == "objects" else scene["bars"]
            assert _decode(img, scene, cfg) == want, s["id"]


def test_world_interface_knows_shapes_samples_only(cfg):
    """srcal.world: a generated sample is in the shapes world and its teacher RAP is assessed as
    correct with every claim true; the same sample without its scene (what real data looks like) is not,
    and gets no assessment."""
    import random

    from srcal.world import in_shapes_world, oracle_assessment, teacher

    [(sample, _)] = generate_samples(cfg, 1, "perception", seed=3, id_prefix="w")
    rap = teacher.teacher_rap(sample, random.Random(0))
    a = oracle_assessment(sample, rap)
    assert in_shapes_world(sample) and a.correct and a.n_claims and a.n_true == a.n_claims
    real = {k: v for k, v in sample.items() if k != "scene"}
    assert not in_shapes_world(real) and oracle_assessment(real, rap) is None
