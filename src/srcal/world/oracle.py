"""The shapes-world oracle: claims read back from text, exact rationale metrics, and the oracle judge.

Because every shapes-world sample carries its scene, everything the paper needs a large helper model for
can be computed exactly here:

* ``assess`` reads any response back (``parse_rap`` + the claim templates of ``srcal.world.shapes`` as
  regexes) and measures it:

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
* ``oracle_judge`` labels a pair like a noisy LLM labeller would: quality, then tie / noise / position
  bias, deterministically from the ``rng`` it is given.

The RAPs the oracle is asked about in training — the teacher's correct ones and the corruptions a judge must
reject — are written by :mod:`srcal.world.teacher` with the claim functions here (``parse_claim``,
``check_claim``, ``render_claim``, ``required_facts``). Answer normalisation (``answers_match``) is the
project's one rule, :mod:`srcal.answers`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from srcal.answers import NUMBER_WORDS, answers_match
from srcal.data.rap import parse_rap
from srcal.world import shapes as world

COMPLETENESS_BONUS = 0.5
"""Quality credit for stating every justifying fact. Below 1 so that one error always outweighs it."""


# ---------------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------------
def short_answer_text(sample: dict) -> str:
    """What the short-answer base model is trained to say: the bare gold answer."""
    return str(sample["answer"])


# ---------------------------------------------------------------------------------------------------
# Claims: the templates of srcal.world.shapes, compiled to regexes
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


def bar_by_color(scene: dict, color: str) -> dict | None:
    """The chart's bar of that colour, None if the chart has none (a claim may name a missing bar)."""
    return next((b for b in scene.get("bars", []) if b["color"] == color), None)


def object_at(scene: dict, r: int, c: int) -> dict | None:
    """The object in cell (r, c), None for an empty cell."""
    return next((o for o in scene.get("objects", []) if (o["row"], o["col"]) == (r, c)), None)


def grid_size(scene: dict) -> int:
    """Cells per side of the scene's grid (chart scenes carry it in their vocab only)."""
    return scene.get("grid") or scene.get("vocab", {}).get("grid", 3)


def check_claim(claim: Claim, scene: dict) -> bool:
    """Is the claim true of the scene? Claims about things the scene does not have are false."""
    a = claim.args
    if claim.kind in ("obj", "empty"):
        if scene["kind"] != "objects":
            return False
        idx = world.position_index(a["pos"], grid_size(scene))
        if idx is None:
            return False
        obj = object_at(scene, *idx)
        if claim.kind == "empty":
            return obj is None
        return obj is not None and obj["color"] == a["color"] and obj["shape"] == a["shape"]
    if claim.kind == "count":
        return world._count({"objects": scene.get("objects", [])}, a["color"], a["shape"]) == a["n"]
    if claim.kind == "bar_count":
        return scene["kind"] == "bars" and len(scene["bars"]) == a["n"]
    if claim.kind == "bar":
        b = bar_by_color(scene, a["color"])
        return b is not None and b["value"] == a["v"]
    if claim.kind == "extreme":
        bars = scene.get("bars", [])
        if not bars:
            return False
        pick = max if a["ext"] == "tallest" else min
        return pick(bars, key=lambda b: b["value"])["color"] == a["color"]
    if claim.kind == "cmp":
        b1, b2 = bar_by_color(scene, a["c1"]), bar_by_color(scene, a["c2"])
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
def fact_key(claim: Claim, grid: int) -> tuple:
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
    """Facts a complete rationale states (as ``fact_key`` tuples); the teacher states all of them."""
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
        v1, v2 = bar_by_color(scene, q["c1"])["value"], bar_by_color(scene, q["c2"])["value"]
        return [("bar", q["c1"]), ("bar", q["c2"]), ("arith", "plus" if t == "bar_sum" else "minus", v1, v2)]
    raise ValueError(f"unknown query type {t!r}")


def implied_answer(sample: dict, claims: list[Claim]) -> str | None:
    """The answer the rationale's own claims determine (true or not), else None. Later claims win."""
    scene, q = sample["scene"], sample["scene"]["query"]
    t, grid = q["type"], grid_size(scene)
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
    grid = grid_size(scene)
    stated = {fact_key(c, grid) for c in claims if c.true}
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
