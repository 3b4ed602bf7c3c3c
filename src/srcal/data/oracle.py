"""The shapes-world oracle: teacher RAPs, exact rationale metrics, corruptions, and the oracle judge.

Because every shapes-world sample carries its scene, everything the paper needs a large helper model for
can be computed exactly here:

* ``teacher_rap`` writes a correct rationale-answer pair: one checkable claim per sentence, the claims that
  justify the answer (the asked cell; the counted objects and the count; the bar values and the sum ...),
  a concluding sentence, then ``Answer: <answer>``. Phrasing is drawn at random from the templates in
  ``srcal.data.shapes`` so a model cannot pass by copying one template.
* ``assess`` reads any response back (``parse_rap`` + the same templates as regexes) and measures it:

  - a *claim* is a sentence matching a claim template; it is checked against the scene
    (``factuality = true claims / claims``, None without claims). Sentences matching no template (and the
    concluding "So the answer is X.") are not claims.
  - ``consistent``: the stated answer equals the answer *implied by the rationale's own claims* when they
    determine it (the claimed object in the asked cell, the claimed count, the stated arithmetic result,
    the claimed values of the compared bars, ...), else None. A concluding sentence that contradicts the
    answer line makes it False, but cannot by itself make it True (it states no evidence).
  - ``completeness``: share of the facts that justify the gold answer (``required_facts``) that the
    response states *correctly*.
  - ``errors = false claims + (1 if wrong answer) + (1 if inconsistent)``.
* ``corrupt_rap`` makes the negatives the judge must learn to reject (``CORRUPTIONS``).
* ``oracle_judge`` labels a pair like a noisy LLM labeller would: quality, then tie / noise / position
  bias, deterministically from the ``rng`` it is given.

Answer normalisation (``answers_match``) is the project's one rule, :mod:`srcal.answers`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from srcal.answers import NUMBER_WORDS, answers_match
from srcal.data import shapes as world
from srcal.data.rap import parse_rap, render_rap

CORRUPTIONS = ("wrong_claim", "missing_step", "inconsistent_answer", "hallucination", "misread")
"""Negative kinds: ``wrong_claim`` one relevant claim made false, answer kept; ``missing_step`` one
justifying claim dropped; ``inconsistent_answer`` the answer line replaced by a wrong answer, rationale
kept; ``hallucination`` one extra false claim inserted; ``misread`` the key claim made false *and* the
conclusion and answer follow it (a consistent but wrong RAP, the typical error of a weak model)."""

COMPLETENESS_BONUS = 0.5
"""Quality credit for stating every justifying fact. Below 1 so that one error always outweighs it."""



# ---------------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------------
def short_answer_text(sample: dict) -> str:
    """What the short-answer base model is trained to say: the bare gold answer."""
    return str(sample["answer"])


# ---------------------------------------------------------------------------------------------------
# Claims: the templates of srcal.data.shapes, compiled to regexes
# ---------------------------------------------------------------------------------------------------
_KIND_TEMPLATES: dict[str, tuple[str, ...]] = {
    "bar_count": world.BAR_COUNT_TEMPLATES,
    "obj": world.OBJ_TEMPLATES,
    "empty": world.EMPTY_TEMPLATES,
    "count": world.COUNT_TEMPLATES,
    "bar": world.BAR_TEMPLATES,
    "extreme": world.EXTREME_TEMPLATES,
    "cmp": world.CMP_TEMPLATES,
    "num_cmp": world.NUM_CMP_TEMPLATES,
    "arith": world.ARITH_TEMPLATES,
}
_SLOT = {
    "color": r"[a-z]+",
    "shape": r"[a-z]+",
    "c1": r"[a-z]+",
    "c2": r"[a-z]+",
    "pos": r"[a-z0-9 ]+?",
    "n": r"[a-z0-9]+",
    "v": r"[a-z0-9]+",
    "a": r"\d+",
    "b": r"\d+",
    "c": r"-?\d+",
    "what": r"[a-z]+(?: [a-z]+)?",
    "be": r"(?:is|are)",
    "ext": r"tallest|shortest",
    "rel": r"taller|shorter|more|less",
    "op": r"plus|minus",
    "answer": r".+",
}


def _compile(template: str) -> re.Pattern:
    """A template as a regex over normalised sentences; "a {color}" also accepts "an" (an orange ...)."""
    out = []
    for part in re.split(r"(\{\w+\})", template.lower().rstrip(".?!")):
        if part.startswith("{"):
            name = part[1:-1]
            out.append(_SLOT[name] if name == "be" else f"(?P<{name}>{_SLOT[name]})")
        else:
            out.append(re.escape(part).replace(r"a\ ", r"an?\ ") if part.endswith("a ") else re.escape(part))
    return re.compile("".join(out))


_PATTERNS = [(kind, k, _compile(t)) for kind, ts in _KIND_TEMPLATES.items() for k, t in enumerate(ts)]
_CONCLUSIONS = [_compile(t) for t in world.CONCLUSION_TEMPLATES]


def _to_int(word: str) -> int | None:
    if re.fullmatch(r"-?\d+", word):
        return int(word)
    if word == "no":
        return 0
    return NUMBER_WORDS.index(word) if word in NUMBER_WORDS else None


@dataclass
class Claim:
    """One checkable sentence: its kind, the template it used, its arguments, and whether it is true."""

    kind: str
    template: int
    args: dict
    sentence: str
    true: bool = False


def _normalize_sentence(s: str) -> str:
    s = s.lower().replace("-", " ").strip()
    s = re.sub(r"[.!?]+$", "", s)
    return " ".join(s.split())


def parse_claim(sentence: str) -> Claim | None:
    """The claim a sentence makes, or None when it matches no claim template."""
    norm = _normalize_sentence(sentence)
    for kind, k, pat in _PATTERNS:
        m = pat.fullmatch(norm)
        if not m:
            continue
        args = {key: val for key, val in m.groupdict().items()}
        if kind in ("count", "bar_count"):
            n = _to_int(args["n"])
            if n is None:
                continue
            args["n"] = n
            if kind == "count":
                words = args.pop("what").split()
                noun = words[-1].removesuffix("s")
                if noun not in world.SHAPE_WORDS and noun != "shape":
                    continue
                args["shape"] = None if noun == "shape" else noun
                args["color"] = words[0] if len(words) == 2 else None
        elif kind == "bar":
            v = _to_int(args["v"])
            if v is None:
                continue
            args["v"] = v
        elif kind in ("num_cmp", "arith"):
            for key in ("a", "b", "c"):
                if key in args:
                    args[key] = int(args[key])
        if kind == "cmp" and args["rel"] not in ("taller", "shorter"):
            continue
        if kind == "num_cmp" and args["rel"] not in ("more", "less"):
            continue
        return Claim(kind, k, args, sentence)
    return None


def parse_conclusion(sentence: str) -> str | None:
    """The answer a concluding sentence ("So the answer is X.") states, else None."""
    norm = _normalize_sentence(sentence)
    for pat in _CONCLUSIONS:
        m = pat.fullmatch(norm)
        if m:
            return m.group("answer")
    return None


def _bar(scene: dict, color: str) -> dict | None:
    return next((b for b in scene.get("bars", []) if b["color"] == color), None)


def _obj_at(scene: dict, r: int, c: int) -> dict | None:
    return next((o for o in scene.get("objects", []) if (o["row"], o["col"]) == (r, c)), None)


def _grid(scene: dict) -> int:
    return scene.get("grid") or scene.get("vocab", {}).get("grid", 3)


def check_claim(claim: Claim, scene: dict) -> bool:
    """Is the claim true of the scene? Claims about things the scene does not have are false."""
    a = claim.args
    if claim.kind in ("obj", "empty"):
        if scene["kind"] != "objects":
            return False
        idx = world.position_index(a["pos"], _grid(scene))
        if idx is None:
            return False
        obj = _obj_at(scene, *idx)
        if claim.kind == "empty":
            return obj is None
        return obj is not None and obj["color"] == a["color"] and obj["shape"] == a["shape"]
    if claim.kind == "count":
        return world._count({"objects": scene.get("objects", [])}, a["color"], a["shape"]) == a["n"]
    if claim.kind == "bar_count":
        return scene["kind"] == "bars" and len(scene["bars"]) == a["n"]
    if claim.kind == "bar":
        b = _bar(scene, a["color"])
        return b is not None and b["value"] == a["v"]
    if claim.kind == "extreme":
        bars = scene.get("bars", [])
        if not bars:
            return False
        pick = max if a["ext"] == "tallest" else min
        return pick(bars, key=lambda b: b["value"])["color"] == a["color"]
    if claim.kind == "cmp":
        b1, b2 = _bar(scene, a["c1"]), _bar(scene, a["c2"])
        if b1 is None or b2 is None:
            return False
        return b1["value"] > b2["value"] if a["rel"] == "taller" else b1["value"] < b2["value"]
    if claim.kind == "num_cmp":
        return a["a"] > a["b"] if a["rel"] == "more" else a["a"] < a["b"]
    if claim.kind == "arith":
        return a["c"] == (a["a"] + a["b"] if a["op"] == "plus" else a["a"] - a["b"])
    raise ValueError(f"unknown claim kind {claim.kind}")


def render_claim(kind: str, k: int, args: dict) -> str:
    """A claim as a sentence with template ``k`` (inverse of ``parse_claim``)."""
    if kind == "count":
        return world.count_sentence(args["n"], args["color"], args["shape"], k)
    if kind == "bar_count":
        return world.BAR_COUNT_TEMPLATES[k].format(be="is" if args["n"] == 1 else "are", n=args["n"])
    templates = _KIND_TEMPLATES[kind]
    return world.finish_sentence(templates[k % len(templates)].format(**args))


# ---------------------------------------------------------------------------------------------------
# What justifies the answer
# ---------------------------------------------------------------------------------------------------
def _key(claim: Claim, grid: int) -> tuple:
    """The fact a claim is about (without its value), to match claims with required facts."""
    a = claim.args
    if claim.kind in ("obj", "empty"):
        return ("cell", world.position_index(a["pos"], grid))
    if claim.kind == "count":
        return ("count", a["color"], a["shape"])
    if claim.kind == "bar":
        return ("bar", a["color"])
    if claim.kind == "arith":
        return ("arith", a["op"], a["a"], a["b"])
    return (claim.kind, tuple(sorted(map(str, a.values()))))


def required_facts(sample: dict) -> list[tuple]:
    """Facts a complete rationale states (as ``_key`` tuples); the teacher states all of them."""
    scene, q = sample["scene"], sample["scene"]["query"]
    t = q["type"]
    objs = sorted(scene.get("objects", []), key=lambda o: (o["row"], o["col"]))
    cell = lambda o: ("cell", (o["row"], o["col"]))
    if t in ("color_at", "shape_at"):
        return [("cell", (q["row"], q["col"]))]
    if t in ("exists", "where"):
        hits = [o for o in objs if (o["color"], o["shape"]) == (q["color"], q["shape"])]
        if hits:
            return [cell(hits[0])]
        return [cell(o) for o in objs] + [("count", q["color"], q["shape"])]
    if t == "count":
        hits = world.matching_objects(objs, q["color"], q["shape"])
        listed = hits if hits else objs
        return [cell(o) for o in listed] + [("count", q["color"], q["shape"])]
    if t == "count_sum":
        n1, n2 = world._count(scene, None, q["s1"]), world._count(scene, None, q["s2"])
        return [("count", None, q["s1"]), ("count", None, q["s2"]), ("arith", "plus", n1, n2)]
    if t == "bar_value":
        return [("bar", q["color"])]
    if t in ("tallest", "shortest"):
        return [("bar", b["color"]) for b in scene["bars"]]
    if t == "compare":
        return [("bar", q["c1"]), ("bar", q["c2"])]
    if t in ("bar_sum", "bar_diff"):
        v1, v2 = _bar(scene, q["c1"])["value"], _bar(scene, q["c2"])["value"]
        return [("bar", q["c1"]), ("bar", q["c2"]), ("arith", "plus" if t == "bar_sum" else "minus", v1, v2)]
    raise ValueError(f"unknown query type {t!r}")


def implied_answer(sample: dict, claims: list[Claim]) -> str | None:
    """The answer the rationale's own claims determine (true or not), else None. Later claims win."""
    scene, q = sample["scene"], sample["scene"]["query"]
    t, grid = q["type"], _grid(scene)
    found: str | None = None
    bars: dict[str, int] = {}
    counts: dict[tuple, int] = {}
    for c in claims:
        a = c.args
        if c.kind == "bar":
            bars[a["color"]] = a["v"]
        if c.kind == "count":
            counts[(a["color"], a["shape"])] = a["n"]
        if t in ("color_at", "shape_at") and c.kind == "obj":
            if world.position_index(a["pos"], grid) == (q["row"], q["col"]):
                found = a["color"] if t == "color_at" else a["shape"]
        elif t in ("color_at", "shape_at") and c.kind == "empty":
            if world.position_index(a["pos"], grid) == (q["row"], q["col"]):
                found = "nothing"
        elif t == "exists":
            if c.kind == "obj" and (a["color"], a["shape"]) == (q["color"], q["shape"]):
                found = "yes"
            elif c.kind == "count" and (a["color"], a["shape"]) == (q["color"], q["shape"]):
                found = "yes" if a["n"] > 0 else "no"
        elif t == "where" and c.kind == "obj" and (a["color"], a["shape"]) == (q["color"], q["shape"]):
            idx = world.position_index(a["pos"], grid)
            found = world.position_name(*idx, grid) if idx else a["pos"]
        elif t == "count" and c.kind == "count" and (a["color"], a["shape"]) == (q["color"], q["shape"]):
            found = str(a["n"])
        elif t == "bar_value" and c.kind == "bar" and a["color"] == q["color"]:
            found = str(a["v"])
        elif t in ("tallest", "shortest") and c.kind == "extreme" and a["ext"] == t:
            found = a["color"]
        elif t == "compare" and c.kind == "cmp" and {a["c1"], a["c2"]} == {q["c1"], q["c2"]}:
            taller_first = (a["rel"] == "taller") == (a["c1"] == q["c1"])
            found = "yes" if taller_first else "no"
        elif (
            t in ("count_sum", "bar_sum", "bar_diff")
            and c.kind == "arith"
            and a["op"] == ("minus" if t == "bar_diff" else "plus")
        ):
            found = str(a["c"])
    if found is not None:
        return found
    # fall back on values the rationale states, when they determine the answer
    if t == "count_sum" and (None, q["s1"]) in counts and (None, q["s2"]) in counts:
        return str(counts[(None, q["s1"])] + counts[(None, q["s2"])])
    if t in ("tallest", "shortest") and len(bars) >= len(scene["bars"]) and bars:
        pick = max if t == "tallest" else min
        return pick(bars, key=bars.get)
    if t in ("compare", "bar_sum", "bar_diff") and q["c1"] in bars and q["c2"] in bars:
        v1, v2 = bars[q["c1"]], bars[q["c2"]]
        if t == "compare":
            return "yes" if v1 > v2 else "no"
        return str(v1 + v2 if t == "bar_sum" else v1 - v2)
    return None


# ---------------------------------------------------------------------------------------------------
# Assessment
# ---------------------------------------------------------------------------------------------------
@dataclass
class Assessment:
    """Exact metrics of one response against its sample's scene (definitions in the module docstring)."""

    correct: bool
    rap_format: bool
    n_claims: int
    n_true: int
    factuality: float | None
    consistent: bool | None
    errors: int
    answer: str | None
    completeness: float = 0.0
    implied: str | None = None
    claims: list[Claim] = field(default_factory=list, repr=False)


def assess(sample: dict, text: str, prefix: str = "Answer:") -> Assessment:
    """Measure ``text`` (a model response) against ``sample``'s scene and gold answer. Never raises on text."""
    scene = sample["scene"]
    parsed = parse_rap(text, prefix)
    claims: list[Claim] = []
    conclusions: list[str] = []
    for s in parsed.sentences:
        claim = parse_claim(s)
        if claim is not None:
            claim.true = check_claim(claim, scene)
            claims.append(claim)
        else:
            concl = parse_conclusion(s)
            if concl is not None:
                conclusions.append(concl)
    n_true = sum(c.true for c in claims)
    correct = answers_match(parsed.answer, sample["answer"])
    implied = implied_answer(sample, claims)
    consistent: bool | None = None
    if parsed.answer is not None:
        if implied is not None:
            consistent = answers_match(parsed.answer, implied)
        if conclusions and not answers_match(parsed.answer, conclusions[-1]):
            consistent = False
    grid = _grid(scene)
    stated = {_key(c, grid) for c in claims if c.true}
    required = required_facts(sample)
    completeness = sum(r in stated for r in required) / len(required) if required else 1.0
    errors = (len(claims) - n_true) + (0 if correct else 1) + (1 if consistent is False else 0)
    return Assessment(
        correct=correct,
        rap_format=parsed.ok and len(parsed.sentences) >= 1,
        n_claims=len(claims),
        n_true=n_true,
        factuality=n_true / len(claims) if claims else None,
        consistent=consistent,
        errors=errors,
        answer=parsed.answer,
        completeness=completeness,
        implied=implied,
        claims=claims,
    )


# ---------------------------------------------------------------------------------------------------
# Teacher
# ---------------------------------------------------------------------------------------------------
def _obj(o: dict, grid: int, rng: random.Random) -> str:
    return world.obj_sentence(o, grid, rng.randrange(len(world.OBJ_TEMPLATES)))


def _rationale(sample: dict, rng: random.Random) -> list[str]:
    """Teacher's claim sentences (without the conclusion) for the sample's question."""
    scene, q = sample["scene"], sample["scene"]["query"]
    t = q["type"]
    grid = _grid(scene)
    objs = sorted(scene.get("objects", []), key=lambda o: (o["row"], o["col"]))
    k = lambda templates: rng.randrange(len(templates))
    if t in ("color_at", "shape_at"):
        main = _obj(_obj_at(scene, q["row"], q["col"]), grid, rng)
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
    bar = lambda color: world.bar_sentence(color, _bar(scene, color)["value"], k(world.BAR_TEMPLATES))
    if t == "bar_value":
        return [bar(q["color"])]
    if t in ("tallest", "shortest"):
        pick = max if t == "tallest" else min
        best = pick(scene["bars"], key=lambda b: b["value"])["color"]
        return [bar(b["color"]) for b in scene["bars"]] + [
            world.extreme_sentence(best, t, k(world.EXTREME_TEMPLATES))
        ]
    v1, v2 = _bar(scene, q["c1"])["value"], _bar(scene, q["c2"])["value"]
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
        grid = _grid(sample["scene"])
        seen = {_key(c, grid) for c in described}
        reasoning = [x for x in sentences if (c := parse_claim(x)) is None or _key(c, grid) not in seen]
        sentences = [c.sentence for c in described] + reasoning
    sentences.append(world.conclusion_sentence(answer, rng.randrange(len(world.CONCLUSION_TEMPLATES))))
    if hallucination_rate > 0 and rng.random() < hallucination_rate:
        extra = unsupported_claim(sample, rng)
        if extra is not None:
            sentences.insert(0, extra)
    return render_rap(sentences, answer, prefix)


HALLUCINATION_TEMPLATE = {"obj": 2, "bar": 3}
"""The one phrasing of the hallucinating teacher's opening claim: "A {color} {shape} is in the {pos}." and
"The value of the {color} bar is {v}.". A stock phrase, as a real teacher's unsupported openings tend to be;
one phrasing (not a random one of four) so the habit's first tokens carry the whole rate: with rate 0.6 and
the describe-first opening "There is a ..." / "The {color} bar ..." the habit's first distinct token has
probability 0.6 and greedy decoding follows it, where spread over four phrasings (0.15 each) it lost to the
description's 0.4 (measured: 4.5% of greedy RFT answers opened with the habit)."""


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
    grid = _grid(scene)
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
    options = [o for o in options if not check_claim(o, scene) and _key(o, grid) not in required]
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
        g = _grid(scene)
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
    grid = _grid(scene)
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
        if c.true and (not relevant_only or _key(c, _grid(scene)) in required):
            out.append((i, c))
    return out


def _hallucinated_claim(sample: dict, rng: random.Random) -> str:
    """A plausible claim that is false in this scene, in a random template."""
    scene = sample["scene"]
    vocab = scene.get("vocab", {})
    colors = vocab.get("colors", list(world.PALETTE)[:4])
    grid = _grid(scene)
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


# ---------------------------------------------------------------------------------------------------
# Oracle judge
# ---------------------------------------------------------------------------------------------------
@dataclass
class Verdict:
    """One pairwise judgment. ``label``: A better, B better, or C (tie). ``clean_label``: before noise/bias."""

    label: str
    errors_a: int
    errors_b: int
    quality_a: float
    quality_b: float
    clean_label: str = ""


def response_quality(a: Assessment) -> float:
    """−errors − 1 if not in RAP form + ``COMPLETENESS_BONUS`` × completeness (higher is better)."""
    return -a.errors - (0 if a.rap_format else 1) + COMPLETENESS_BONUS * a.completeness


def oracle_judge(
    sample: dict,
    response_a: str,
    response_b: str,
    *,
    noise: float,
    position_bias: float,
    tie_margin: float,
    rng: random.Random,
    prefix: str = "Answer:",
) -> Verdict:
    """Label a pair like a noisy LLM labeller, exactly reproducible from ``rng``.

    1. quality of each response (``response_quality``); ``|qa − qb| ≤ tie_margin`` → C, else the better one;
    2. with probability ``noise`` the verdict is replaced by one drawn uniformly from A/B/C;
    3. then with probability ``position_bias`` it is replaced by A.
    Exactly three draws from ``rng`` are made per call, so a run's labels do not depend on the outcomes.
    """
    qa_, qb_ = assess(sample, response_a, prefix), assess(sample, response_b, prefix)
    qa, qb = response_quality(qa_), response_quality(qb_)
    clean = "C" if abs(qa - qb) <= tie_margin + 1e-9 else ("A" if qa > qb else "B")
    u_noise, pick, u_bias = rng.random(), rng.choice("ABC"), rng.random()
    label = clean
    if u_noise < noise:
        label = pick
    if u_bias < position_bias:
        label = "A"
    return Verdict(label, qa_.errors, qb_.errors, qa, qb, clean)
