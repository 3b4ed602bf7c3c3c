"""The shapes world's teacher: correct rationale-answer pairs, and the corrupted ones a judge must reject.

* ``teacher_rap`` writes a correct rationale-answer pair: one checkable claim per sentence, the claims that
  justify the answer (the asked cell; the counted objects and the count; the bar values and the sum ...),
  a concluding sentence, then ``Answer: <answer>``. Phrasing is drawn at random from the templates in
  ``srcal.world.shapes`` so a model cannot pass by copying one template. It can also play a hallucinating
  teacher (``unsupported_claim``) or one that describes the scene first.
* ``corrupt_rap`` makes the negatives the judge must learn to reject (``CORRUPTIONS``).

Both write only sentences the oracle reads back (:mod:`srcal.world.oracle`: ``parse_claim``,
``check_claim``), so every claim they make is known true or false.
"""

from __future__ import annotations

import random

from srcal.answers import answers_match
from srcal.data.rap import parse_rap, render_rap
from srcal.world import shapes as world
from srcal.world.oracle import (
    Claim,
    bar_by_color,
    check_claim,
    fact_key,
    grid_size,
    implied_answer,
    object_at,
    parse_claim,
    parse_conclusion,
    render_claim,
    required_facts,
    short_answer_text,
)

CORRUPTIONS = ("wrong_claim", "missing_step", "inconsistent_answer", "hallucination", "misread")
"""Negative kinds: ``wrong_claim`` one relevant claim made false, answer kept; ``missing_step`` one
justifying claim dropped; ``inconsistent_answer`` the answer line replaced by a wrong answer, rationale
kept; ``hallucination`` one extra false claim inserted; ``misread`` the key claim made false *and* the
conclusion and answer follow it (a consistent but wrong RAP, the typical error of a weak model)."""


# ---------------------------------------------------------------------------------------------------
# Teacher
# ---------------------------------------------------------------------------------------------------
def _obj(o: dict, grid: int, rng: random.Random) -> str:
    return world.obj_sentence(o, grid, rng.randrange(len(world.OBJ_TEMPLATES)))


def _rationale(sample: dict, rng: random.Random) -> list[str]:
    """Teacher's claim sentences (without the conclusion) for the sample's question."""
    scene, q = sample["scene"], sample["scene"]["query"]
    t = q["type"]
    grid = grid_size(scene)
    objs = sorted(scene.get("objects", []), key=lambda o: (o["row"], o["col"]))
    k = lambda templates: rng.randrange(len(templates))
    if t in ("color_at", "shape_at"):
        main = _obj(object_at(scene, q["row"], q["col"]), grid, rng)
        others = [o for o in objs if (o["row"], o["col"]) != (q["row"], q["col"])]
        if others and rng.random() < 0.3:  # an extra true fact: rationales differ in *which* facts they state
            return [_obj(rng.choice(others), grid, rng), main]
        return [main]
    if t in ("exists", "where"):
        hits = [o for o in objs if (o["color"], o["shape"]) == (q["color"], q["shape"])]
        if hits:
            return [_obj(hits[0], grid, rng)]
        return [_obj(o, grid, rng) for o in objs] + [
            world.count_sentence(0, q["color"], q["shape"], k(world.COUNT_TEMPLATES))
        ]
    if t == "count":
        hits = world.matching_objects(objs, q["color"], q["shape"])
        listed = hits if hits else objs
        return [_obj(o, grid, rng) for o in listed] + [
            world.count_sentence(len(hits), q["color"], q["shape"], k(world.COUNT_TEMPLATES))
        ]
    if t == "count_sum":
        n1, n2 = world._count(scene, None, q["s1"]), world._count(scene, None, q["s2"])
        return [
            world.count_sentence(n1, None, q["s1"], k(world.COUNT_TEMPLATES)),
            world.count_sentence(n2, None, q["s2"], k(world.COUNT_TEMPLATES)),
            world.arith_sentence(n1, "plus", n2, k(world.ARITH_TEMPLATES)),
        ]
    bar = lambda color: world.bar_sentence(color, bar_by_color(scene, color)["value"], k(world.BAR_TEMPLATES))
    if t == "bar_value":
        return [bar(q["color"])]
    if t in ("tallest", "shortest"):
        pick = max if t == "tallest" else min
        best = pick(scene["bars"], key=lambda b: b["value"])["color"]
        return [bar(b["color"]) for b in scene["bars"]] + [
            world.extreme_sentence(best, t, k(world.EXTREME_TEMPLATES))
        ]
    v1, v2 = bar_by_color(scene, q["c1"])["value"], bar_by_color(scene, q["c2"])["value"]
    if t == "compare":
        last = (world.cmp_sentence(q["c1"], q["c2"], v1 > v2) if rng.random() < 0.5
                else world.num_cmp_sentence(v1, v2))
        return [bar(q["c1"]), bar(q["c2"]), last]
    if t in ("bar_sum", "bar_diff"):
        op = "plus" if t == "bar_sum" else "minus"
        return [bar(q["c1"]), bar(q["c2"]), world.arith_sentence(v1, op, v2, k(world.ARITH_TEMPLATES))]
    raise ValueError(f"unknown query type {t!r}")


def teacher_rap(sample: dict, rng: random.Random, prefix: str = "Answer:", hallucination_rate: float = 0.0,
                describe_first: bool = False) -> str:
    """A correct rationale-answer pair for ``sample`` in randomly varied phrasing (see module docstring).

    With ``hallucination_rate`` > 0 the teacher behaves like a real teacher VLM: that share of its RAPs
    *opens* with one unsupported claim (:func:`unsupported_claim`) — false, but about a part of the scene
    the answer does not depend on, so the answer and its justification stay right and the answer-match
    filter of RAP augmentation keeps the RAP. A model fine-tuned on such RAPs learns a *language-level*
    habit (open with a scene claim it cannot back), the kind of error SRC's preference pairs can remove.
    The claim opens the RAP, not a random sentence, because evaluation decodes greedily: a habit spread
    over random positions at a rate below 1/2 never wins the argmax at any one position, while an opening
    taken with probability above 1/2 does. At rate 0 the draws from ``rng`` are exactly those of the
    correct teacher, so its RAPs (and cached replies) are unchanged.

    ``describe_first``: the rationale opens with the whole scene in the canonical form of
    ``shapes.describe_scene`` (what the tiny base is trained to say to "Describe the image."), followed by
    only those justifying claims the description does not already state (counts, sums, comparisons), as a
    teacher that first says what it sees and then reasons. A model fine-tuned on these RAPs reuses the
    base's captioning (no look-up of the asked cell in the image), and the unsupported opening claim, in a
    stock phrasing, stays distinguishable from the description.
    """
    answer = short_answer_text(sample)
    sentences = _rationale(sample, rng)
    if describe_first:
        described = [c for c in (parse_claim(x) for x in world.description_sentences(sample["scene"]))
                     if c is not None]
        grid = grid_size(sample["scene"])
        seen = {fact_key(c, grid) for c in described}
        reasoning = [x for x in sentences if (c := parse_claim(x)) is None or fact_key(c, grid) not in seen]
        sentences = [c.sentence for c in described] + reasoning
    sentences.append(world.conclusion_sentence(answer, rng.randrange(len(world.CONCLUSION_TEMPLATES))))
    if hallucination_rate > 0 and rng.random() < hallucination_rate:
        extra = unsupported_claim(sample, rng)
        if extra is not None:
            sentences.insert(0, extra)
    return render_rap(sentences, answer, prefix)


HALLUCINATION_TEMPLATE = {"obj": 4, "bar": 3}
"""The one phrasing of the hallucinating teacher's opening claim: "The {color} {shape} is in the {pos}." and
"The value of the {color} bar is {v}.". A stock phrase, as a real teacher's unsupported openings tend to be;
one phrasing (not a random one of four) so the habit's first tokens carry the whole rate: with rate 0.6 and
the describe-first opening "There is a ..." / "The {color} bar ..." the habit's first distinct token has
probability 0.6 and greedy decoding follows it, where spread over four phrasings (0.15 each) it lost to the
description's 0.4 (measured: 4.5% of greedy RFT answers opened with the habit). Objects open with "The", not
"A": a completion's first token has no leading space, and the tiny base's output layer could not give the
bare "A" more than ~0.03 whatever LoRA learned, so RFT never took the habit on object scenes (docs/effect.md)."""


def unsupported_claim(sample: dict, rng: random.Random) -> str | None:
    """A false claim about something the sample's answer does not depend on, or None if the scene has none.

    Object scenes: an object in a cell other than the asked one, whose colour/shape the query does not
    name (so no count, existence or location the answer rests on changes). Charts: a bar the query does not
    name, with a wrong value or a colour the chart lacks; when every bar is relevant (tallest/shortest of a
    full chart), a wrong number of bars. The claim is checked false and outside ``required_facts``, and
    always in one stock phrasing (:data:`HALLUCINATION_TEMPLATE`), never the canonical form of
    ``shapes.describe_scene`` (except a bar count, which has one form only).
    """
    scene, q = sample["scene"], sample["scene"]["query"]
    vocab = scene.get("vocab", {})
    colors = vocab.get("colors", list(world.PALETTE)[:4])
    grid = grid_size(scene)
    required = set(required_facts(sample))
    named_colors = {q.get(k) for k in ("color", "c1", "c2")} - {None}
    named_shapes = {q.get(k) for k in ("shape", "s1", "s2")} - {None}
    if q["type"] in ("count", "exists", "where"):  # the query names a (colour, shape) filter
        irrelevant = lambda a: not world.matching_objects([a], q.get("color"), q.get("shape"))
    else:
        irrelevant = lambda a: a["color"] not in named_colors and a["shape"] not in named_shapes
    options: list[Claim] = []
    if scene["kind"] == "objects":
        shapes = vocab.get("shapes", list(world.SHAPE_WORDS))
        for r in range(grid):
            for c in range(grid):
                if (q.get("row"), q.get("col")) == (r, c):
                    continue
                for color in colors:
                    for shape in shapes:
                        args = {"color": color, "shape": shape, "pos": world.position_name(r, c, grid)}
                        if irrelevant(args):
                            options.append(Claim("obj", HALLUCINATION_TEMPLATE["obj"], args, ""))
    else:
        whole = q["type"] in ("tallest", "shortest")
        present = {b["color"] for b in scene["bars"]}
        for color in colors:
            if color in named_colors or (whole and color in present):
                continue
            for v in range(1, vocab.get("max_value", 9) + 1):
                options.append(Claim("bar", HALLUCINATION_TEMPLATE["bar"], {"color": color, "v": v}, ""))
        if not options:
            n = len(scene["bars"])
            options = [Claim("bar_count", 0, {"n": m}, "") for m in (n - 1, n + 1) if m >= 1]
    options = [o for o in options if not check_claim(o, scene) and fact_key(o, grid) not in required]
    if not options:
        return None
    pick = rng.choice(options)
    return render_claim(pick.kind, pick.template, pick.args)


# ---------------------------------------------------------------------------------------------------
# Corruptions
# ---------------------------------------------------------------------------------------------------
def _answer_space(sample: dict) -> list[str]:
    """Plausible answers of the sample's question type (the gold one included)."""
    scene, q = sample["scene"], sample["scene"]["query"]
    vocab = scene.get("vocab", {})
    t = q["type"]
    if t in ("color_at", "tallest", "shortest"):
        return list(vocab.get("colors") or [b["color"] for b in scene.get("bars", [])])
    if t == "shape_at":
        return list(vocab.get("shapes") or world.SHAPE_WORDS)
    if t in ("exists", "compare"):
        return ["yes", "no"]
    if t == "where":
        g = grid_size(scene)
        return [world.position_name(r, c, g) for r in range(g) for c in range(g)]
    gold = int(sample["answer"])
    return [str(n) for n in range(max(0, gold - 2), gold + 3)]


def _wrong_answer(sample: dict, rng: random.Random) -> str:
    options = [a for a in _answer_space(sample) if not answers_match(a, sample["answer"])]
    return rng.choice(options)


def _false_variants(claim: Claim, scene: dict) -> list[dict]:
    """Argument sets that make ``claim`` false, changing one thing at a time."""
    vocab = scene.get("vocab", {})
    colors = vocab.get("colors", list(world.PALETTE)[:4])
    shapes = vocab.get("shapes", list(world.SHAPE_WORDS))
    grid = grid_size(scene)
    a = claim.args
    out: list[dict] = []
    if claim.kind == "obj":
        out += [{**a, "color": c} for c in colors if c != a["color"]]
        out += [{**a, "shape": s} for s in shapes if s != a["shape"]]
        out += [{**a, "pos": world.position_name(r, c, grid)} for r in range(grid) for c in range(grid)]
    elif claim.kind == "count":
        out += [{**a, "n": n} for n in (a["n"] - 1, a["n"] + 1) if n >= 0]
    elif claim.kind == "bar":
        out += [{**a, "v": v} for v in range(1, vocab.get("max_value", 9) + 1) if v != a["v"]]
    elif claim.kind == "extreme":
        out += [{**a, "color": c} for c in colors if c != a["color"]]
    elif claim.kind == "cmp":
        out.append({**a, "rel": "shorter" if a["rel"] == "taller" else "taller"})
    elif claim.kind == "num_cmp":
        out.append({**a, "rel": "less" if a["rel"] == "more" else "more"})
    elif claim.kind == "arith":
        out += [{**a, "c": c} for c in (a["c"] - 1, a["c"] + 1) if c >= 0]  # no new "-" token
    elif claim.kind == "empty":
        pass
    elif claim.kind == "bar_count":
        out += [{**a, "n": a["n"] + 1}]
    return [v for v in out if not check_claim(Claim(claim.kind, claim.template, v, ""), scene)]


def _claim_indices(sample: dict, sentences: list[str], relevant_only: bool) -> list[tuple[int, Claim]]:
    scene = sample["scene"]
    required = set(required_facts(sample))
    out = []
    for i, s in enumerate(sentences):
        c = parse_claim(s)
        if c is None:
            continue
        c.true = check_claim(c, scene)
        if c.true and (not relevant_only or fact_key(c, grid_size(scene)) in required):
            out.append((i, c))
    return out


def _hallucinated_claim(sample: dict, rng: random.Random) -> str:
    """A plausible claim that is false in this scene, in a random template."""
    scene = sample["scene"]
    vocab = scene.get("vocab", {})
    colors = vocab.get("colors", list(world.PALETTE)[:4])
    grid = grid_size(scene)
    for _ in range(100):
        if scene["kind"] == "objects":
            args = {
                "color": rng.choice(colors),
                "shape": rng.choice(vocab.get("shapes", list(world.SHAPE_WORDS))),
                "pos": world.position_name(rng.randrange(grid), rng.randrange(grid), grid),
            }
            claim = Claim("obj", rng.randrange(len(world.OBJ_TEMPLATES)), args, "")
        else:
            args = {"color": rng.choice(colors), "v": rng.randint(1, vocab.get("max_value", 9))}
            claim = Claim("bar", rng.randrange(len(world.BAR_TEMPLATES)), args, "")
        if not check_claim(claim, scene):
            return render_claim(claim.kind, claim.template, claim.args)
    raise RuntimeError("could not find a false claim for this scene")  # pragma: no cover


def corrupt_rap(sample: dict, rap: str, kind: str, rng: random.Random, prefix: str = "Answer:") -> str:
    """A worse version of ``rap`` (normally a teacher RAP) of the given kind (``CORRUPTIONS``).

    Falls back to ``inconsistent_answer`` when the RAP has no claim the requested kind could change
    (e.g. ``missing_step`` on a RAP without claims), so the result is always worse than a correct RAP.
    """
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; expected one of {CORRUPTIONS}")
    parsed = parse_rap(rap, prefix)
    sentences = list(parsed.sentences)
    answer = parsed.answer if parsed.answer is not None else short_answer_text(sample)
    if kind in ("wrong_claim", "misread"):
        candidates = [
            (i, c, v)
            for i, c in _claim_indices(sample, sentences, kind == "wrong_claim")
            for v in _false_variants(c, sample["scene"])
        ]
        if kind == "misread":
            # keep only changes that move the implied answer, then let the conclusion and answer follow
            moved = []
            for i, c, v in candidates:
                trial = list(sentences)
                trial[i] = render_claim(c.kind, c.template, v)
                claims = [x for x in (parse_claim(s) for s in trial) if x is not None]
                new = implied_answer(sample, claims)
                if new is not None and not answers_match(new, sample["answer"]):
                    moved.append((i, c, v, new))
            q = sample["scene"]["query"]
            if not moved and q["type"] == "exists" and candidates:
                # "yes" rests on one object claim; the misreading is not seeing it at all
                i = candidates[0][0]
                wrong = world.count_sentence(0, q["color"], q["shape"],
                                             rng.randrange(len(world.COUNT_TEMPLATES)))
                moved = [(i, None, wrong, "no")]
            if moved:
                i, c, v, new = rng.choice(moved)
                sentences[i] = v if c is None else render_claim(c.kind, c.template, v)
                sentences = [
                    world.conclusion_sentence(new, rng.randrange(3)) if parse_conclusion(s) else s
                    for s in sentences
                ]
                return render_rap(sentences, new, prefix)
        elif candidates:
            i, c, v = rng.choice(candidates)
            sentences[i] = render_claim(c.kind, c.template, v)
            return render_rap(sentences, answer, prefix)
    elif kind == "missing_step":
        relevant = _claim_indices(sample, sentences, True)
        if relevant:
            i, _ = rng.choice(relevant)
            return render_rap(sentences[:i] + sentences[i + 1 :], answer, prefix)
    elif kind == "hallucination":
        at = rng.randrange(max(1, len(sentences)))  # before the conclusion, which is last
        sentences.insert(at, _hallucinated_claim(sample, rng))
        return render_rap(sentences, answer, prefix)
    return render_rap(sentences, _wrong_answer(sample, rng), prefix)
