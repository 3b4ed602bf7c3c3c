"""R-Scorer's input format: what the text-only judge reads for one pair (description, question, A, B).

The prompt is ``rscorer.prompt_template`` filled with four fields; the shared part (description, question)
comes first, so a server's prefix cache covers it across the N(N−1) pairs of one sample. The judge answers
with one verdict token, ``A``, ``B`` or ``C`` (tie), read from the logits at the prompt's last position.

Two ways to fill the fields (``rscorer.input_format``):

* ``text`` — the fields verbatim: the image description (a caption or perception tags a teacher wrote
  once per image), the question, the two responses. What a Qwen2.5-1.5B-class judge reads on real data.
* ``facts`` — the shapes world's *fact language*, for the tiny judge trained from scratch in minutes.
  A judge this small learns pairwise comparison in minutes on 2 cores only when facts are short, closed-vocabulary token sequences in the same form in the
  description and in the responses; prose sentences stayed near chance. So each sentence is
  canonicalised, by the oracle's own claim parser (``srcal.world.oracle.parse_claim``, the same templates
  the world writes with), into a *subject* word and a *value* word — ``There is a red circle in the top
  left.`` → ``topleft redcircle``, ``The blue bar is 7.`` → ``barblue seven``, ``I count 2 circles.`` →
  ``countanycircle two`` — and the description lists the scene's facts as the same pairs. A sentence that
  matches no template becomes ``other``; the concluding sentence ``so <answer>``; the answer line
  ``answer <answer>``. Arithmetic stays compositional (``three plus four is seven``): it is true or false
  whatever the image shows.
* ``facts+ref`` — the same, and each scene claim is followed by the description's value for the claim's
  subject (``topleft redcircle bluecircle``; ``unk`` when the description has no such subject): the
  claim-aligned *reference support* JudgeLM (arXiv 2310.17631) gives its judge. The retrieval is by
  subject word, a text operation on the judge's own inputs; whether claim and reference agree, and how
  errors, answers and completeness weigh in the verdict, is still the judge's to learn. It is the tiny
  recipe's default because it is the variant we measured learning within minutes (``recipes/tiny.yaml``);
  ``facts`` alone was only tried at a learning rate that also failed ``facts+ref``, so it is not ruled out.

* ``facts+diff`` — ``facts+ref`` without the claims both responses make (:func:`pair_diff`), and the
  question followed by its subject's entries (:func:`question_reference`). The tiny recipe's default since
  issue 13: the verdict depends only on what differs (a shared claim adds the same to both sides), and two
  candidates of one beam search differ in a claim or two and the answer; shown all of both responses and
  the scene list, the tiny judge never got its verdict off the prior (docs/effect.md, "The judge"). The
  template may then leave ``{description}`` out: every claim and the question carry their references.

The canonicalisation reads only the judge's own inputs (the response text, the description and the
question of the sample); it never asks whether a claim is true. The description is a richer perception-tag
list than ``describe_scene``'s prose: every cell (empty ones as ``none``), object counts per shape, per
colour and per colour+shape, or every bar value, the bar count, the tallest and shortest bar and each
bar-to-bar comparison — what an image tagger would list.

Fact words use letters only (numbers are spelled) so that Qwen2's pre-tokenizer, which ``AutoTokenizer``
(and therefore vLLM) rebuilds for a ``qwen2`` folder, keeps each word whole and the BPE trained on
:func:`fact_vocabulary` gives it one token (checked when the judge is built).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from srcal.answers import NUMBER_WORDS, normalize_answer

VERDICT_LABELS = ("A", "B", "C")
REFERENCE_FORMATS = ("facts+ref", "facts+diff")  # the input formats with reference support

UNKNOWN = "unk"
OTHER = "other"


def number_word(n: int) -> str:
    """A number as a letters-only word (``7`` → ``seven``); out of range → ``unk``."""
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else UNKNOWN


def cell_word(row: int, col: int, grid: int) -> str:
    """One word for a grid cell: the world's position name without spaces (``topleft``, ``center``), or
    ``rowbcolc`` style (letters, not digits) for grids larger than 3."""
    from srcal.world import shapes as world

    if grid <= 3:
        return world.position_name(row, col, grid).replace(" ", "")
    return f"row{chr(97 + row)}col{chr(97 + col)}"


@dataclass
class Canonical:
    """One response in the fact language: ``words`` (space-joined in the prompt) and, per word, the index
    of the claim it came from (or -1), so a trainer can attach per-claim targets to the right token."""

    words: list[str]
    claim_of_word: list[int] = field(default_factory=list)
    answer_word: int = -1  # index in ``words`` of the answer token (-1 when there is no answer line)
    claim_spans: list[tuple[int, int]] = field(default_factory=list)  # (first word, last + 1) per claim

    @property
    def text(self) -> str:
        return " " + " ".join(self.words)

    def without_claims(self, drop: set[int]) -> Canonical:
        """The same response with the claims whose index is in ``drop`` removed (their words and all)."""
        gone = {w for c, (a, b) in enumerate(self.claim_spans) if c in drop for w in range(a, b)}
        keep = [w for w in range(len(self.words)) if w not in gone]
        new_index = {w: i for i, w in enumerate(keep)}
        return Canonical([self.words[w] for w in keep], [self.claim_of_word[w] for w in keep],
                         new_index.get(self.answer_word, -1),
                         [(new_index[a], new_index[b - 1] + 1) for c, (a, b) in enumerate(self.claim_spans)
                          if c not in drop])

    def claim_key(self, c: int) -> tuple[str, ...]:
        """The words of claim ``c``: two responses making the same claim have the same key."""
        a, b = self.claim_spans[c]
        return tuple(self.words[a:b])


# ---------------------------------------------------------------------------------------------------
# Claims → words
# ---------------------------------------------------------------------------------------------------
def _answer_word(answer: str | None, grid: int) -> str:
    """The answer as one word: colour/shape/yes/no as is, numbers spelled, positions joined."""
    from srcal.world import shapes as world

    if answer is None:
        return "none"
    norm = normalize_answer(answer)
    if re.fullmatch(r"\d+", norm):
        return number_word(int(norm))
    idx = world.position_index(norm, grid)
    if idx is not None:
        return cell_word(*idx, grid)
    if re.fullmatch(r"[a-z]+", norm):
        return norm
    return UNKNOWN


def claim_fact(claim, grid: int) -> tuple[str, str] | None:
    """(subject, value) words of a claim about the scene; None for scene-independent arithmetic.

    Subjects: a cell (``topleft``), a count (``countanycircle``, ``countredshape``), a bar (``barblue``),
    ``barcount``, ``tallest`` / ``shortest``, a bar pair (``redvsblue``). Values: ``redcircle`` / ``none``
    for a cell, a spelled number, a colour, ``taller`` / ``shorter``.
    """
    from srcal.world import shapes as world

    a, k = claim.args, claim.kind
    if k in ("obj", "empty"):
        idx = world.position_index(a["pos"], grid)
        return (cell_word(*idx, grid) if idx else UNKNOWN, "none" if k == "empty" else a["color"] + a["shape"])
    if k == "count":
        return (f"count{a['color'] or 'any'}{a['shape'] or 'shape'}", number_word(a["n"]))
    if k == "bar_count":
        return ("barcount", number_word(a["n"]))
    if k == "bar":
        return (f"bar{a['color']}", number_word(a["v"]))
    if k == "extreme":
        return (a["ext"], a["color"])
    if k == "cmp":
        return (f"{a['c1']}vs{a['c2']}", a["rel"])
    return None


def claim_words(claim, grid: int, reference: dict[str, str] | None = None) -> list[str]:
    """The fact-language words of one parsed claim (``srcal.world.oracle.Claim``): subject then value, and
    with ``reference`` the description's value for the same subject; the *last* word carries the claim's
    truth (where a trainer puts the per-claim target)."""
    a, k = claim.args, claim.kind
    fact = claim_fact(claim, grid)
    if fact is not None:
        return [*fact, reference.get(fact[0], UNKNOWN)] if reference is not None else list(fact)
    if k == "num_cmp":
        return [number_word(a["a"]), a["rel"], number_word(a["b"])]
    if k == "arith":
        return [number_word(a["a"]), a["op"], number_word(a["b"]), "is", number_word(a["c"])]
    return [OTHER]


def canonical_response(text: str, grid: int, prefix: str = "Answer:",
                       reference: dict[str, str] | None = None) -> Canonical:
    """A response (any text, e.g. a generated candidate) in the fact language. Never raises on text.

    With ``reference`` (subject → the description's value for it, :func:`description_facts`), each
    scene claim is followed by the description's value for the same subject (``unk`` when the
    description has none): the claim-aligned *reference support* of JudgeLM (arXiv 2310.17631) — the
    judge still decides whether claim and reference agree, and weighs errors, answers and completeness.
    """
    from srcal.world import oracle
    from srcal.data.rap import parse_rap

    parsed = parse_rap(text, prefix)
    words: list[str] = []
    owner: list[int] = []
    spans: list[tuple[int, int]] = []
    n_claims = 0
    for s in parsed.sentences:
        claim = oracle.parse_claim(s)
        if claim is not None:
            ws = claim_words(claim, grid, reference)
            spans.append((len(words), len(words) + len(ws)))
            words += ws
            owner += [-1] * (len(ws) - 1) + [n_claims]
            n_claims += 1
            continue
        concl = oracle.parse_conclusion(s)
        if concl is not None:
            words += ["so", _answer_word(concl, grid)]
        else:
            words.append(OTHER)
        owner += [-1] * (len(words) - len(owner))
    words.append("answer")
    words.append(_answer_word(parsed.answer, grid))
    owner += [-1, -1]
    return Canonical(words, owner, answer_word=len(words) - 1, claim_spans=spans)


def pair_diff(a: Canonical, b: Canonical) -> tuple[Canonical, Canonical, set[int], set[int]]:
    """``facts+diff``: both responses without the claims they share (as a multiset of claim word tuples),
    plus the dropped claim indices of each. Why: two candidates of one beam search share most sentences, and
    a shared claim adds the same errors, true claims and completeness to both sides — it cannot change which
    is better (``oracle.response_quality`` is a sum over claims plus the answer terms) — so the pair's
    verdict is decided by what differs. Showing only that is the diff view a human reviewer uses; the tiny
    judge then counts over 0–3 claims instead of 6–7 (policy pairs differ mostly in the answer)."""
    from collections import Counter

    shared = Counter(a.claim_key(c) for c in range(len(a.claim_spans)))
    shared &= Counter(b.claim_key(c) for c in range(len(b.claim_spans)))

    def drop(x: Canonical) -> set[int]:
        left, out = Counter(shared), set()
        for c in range(len(x.claim_spans)):
            k = x.claim_key(c)
            if left[k] > 0:
                left[k] -= 1
                out.add(c)
        return out

    da, db = drop(a), drop(b)
    return a.without_claims(da), b.without_claims(db), da, db


# ---------------------------------------------------------------------------------------------------
# Description and question → words
# ---------------------------------------------------------------------------------------------------
def description_words(scene: dict) -> list[str]:
    """The scene as perception tags in the fact language, in a fixed order (see module docstring)."""
    return [w for fact in description_facts(scene) for w in fact]


def description_facts(scene: dict) -> list[tuple[str, str]]:
    """(subject, value) for every perception tag of the scene (words as in :func:`claim_fact`)."""
    colors = scene.get("vocab", {}).get("colors") or sorted({o["color"] for o in scene.get("objects", [])})
    shapes_ = scene.get("vocab", {}).get("shapes") or ["circle", "square", "triangle"]
    if scene["kind"] == "objects":
        grid = scene["grid"]
        at = {(o["row"], o["col"]): o for o in scene["objects"]}
        facts = []
        for r in range(grid):
            for c in range(grid):
                o = at.get((r, c))
                facts.append((cell_word(r, c, grid), o["color"] + o["shape"] if o else "none"))
        objs = scene["objects"]
        count = lambda col, sh: sum(1 for o in objs if col in (None, o["color"]) and sh in (None, o["shape"]))
        keys = [("any", "shape")] + [("any", s) for s in shapes_] + [(c, "shape") for c in colors]
        keys += [(c, s) for c in colors for s in shapes_]
        for c, s in keys:
            n = count(None if c == "any" else c, None if s == "shape" else s)
            facts.append((f"count{c}{s}", number_word(n)))
        return facts
    bars = scene["bars"]
    facts = [(f"bar{b['color']}", number_word(b["value"])) for b in bars]
    facts.append(("barcount", number_word(len(bars))))
    facts.append(("tallest", max(bars, key=lambda b: b["value"])["color"]))
    facts.append(("shortest", min(bars, key=lambda b: b["value"])["color"]))
    for b1 in bars:
        for b2 in bars:
            if b1 is not b2:
                facts.append((f"{b1['color']}vs{b2['color']}", "taller" if b1["value"] > b2["value"] else "shorter"))
    return facts


def question_words(query: dict, grid: int) -> list[str]:
    """The question in the fact language: its type, then its arguments (``coloratt topleft`` ...)."""
    t = query["type"]
    words = ["q" + t.replace("_", "")]
    if t in ("color_at", "shape_at"):
        words.append(cell_word(query["row"], query["col"], grid))
    elif t in ("exists", "where"):
        words += [query["color"], query["shape"]]
    elif t == "count":
        words += [query.get("color") or "any", query.get("shape") or "shape"]
    elif t == "count_sum":
        words += [query["s1"], query["s2"]]
    elif t == "bar_value":
        words.append(query["color"])
    elif t in ("compare", "bar_sum", "bar_diff"):
        words += [query["c1"], query["c2"]]
    return words


def question_reference(scene: dict, grid: int) -> list[str]:
    """``facts+ref`` / ``facts+diff``: the description's entries on the question's subject, the question-side twin of the
    claims' reference support — retrieval by subject word, like a RAG lookup over the perception tags, that
    never decides which answer is right: ``qshapeat bottomright`` → ``greentriangle`` (the cell's entry),
    ``qexists red circle`` → ``one`` (``countredcircle``), ``qwhere yellow circle`` → the cells whose entry
    is ``yellowcircle`` (``none`` if no cell), counts and bars → their entries. The judge still has to
    relate the answer word to them (``triangle`` to ``greentriangle``, ``no`` to ``one``, a sum to two
    counts). Why: most pairs of the policy's own candidates differ only in the answer (51 of 89 held-out
    pairs of the default run), and a judge reading the whole scene for it did not learn to check answers."""
    q = scene["query"]
    t = q["type"]
    facts = description_facts(scene)
    ref = dict(facts)
    get = lambda subject: ref.get(subject, UNKNOWN)  # noqa: E731
    if t in ("color_at", "shape_at"):
        return [get(cell_word(q["row"], q["col"], grid))]
    if t == "exists":
        return [get(f"count{q['color']}{q['shape']}")]
    if t == "where":
        cells = [subject for subject, value in facts if value == q["color"] + q["shape"]]
        return cells or ["none"]
    if t == "count":
        return [get(f"count{q.get('color') or 'any'}{q.get('shape') or 'shape'}")]
    if t == "count_sum":
        return [get(f"countany{q['s1']}"), get(f"countany{q['s2']}")]
    if t == "bar_value":
        return [get(f"bar{q['color']}")]
    if t == "compare":
        return [get(f"{q['c1']}vs{q['c2']}")]
    if t in ("bar_sum", "bar_diff"):
        return [get(f"bar{q['c1']}"), get(f"bar{q['c2']}")]
    if t in ("tallest", "shortest"):
        return [get(t)]
    return []


def sample_grid(sample: dict) -> int:
    scene = sample.get("scene") or {}
    return scene.get("grid") or scene.get("vocab", {}).get("grid", 3)


# ---------------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------------
@dataclass
class JudgeInput:
    """The four fields of one pair's prompt, already in the judge's input format."""

    description: str
    question: str
    response_a: str
    response_b: str


def shared_fields(sample: dict, input_format: str) -> tuple[str, str]:
    """(description, question) of a sample: identical for every pair of its candidates."""
    if input_format.startswith("facts"):
        scene = sample.get("scene")
        if not scene:
            raise ValueError(
                f"sample {sample.get('id')!r} has no scene: rscorer.input_format 'facts' is for the shapes "
                "world; use input_format 'text' for real data"
            )
        grid = sample_grid(sample)
        words = question_words(scene["query"], grid)
        if input_format in REFERENCE_FORMATS:
            words += question_reference(scene, grid)
        return " " + " ".join(description_words(scene)), " " + " ".join(words)
    return str(sample.get("description", "")), str(sample.get("question", ""))


def reference_of(sample: dict, input_format: str) -> dict[tuple, str] | None:
    """Subject → description word, for the ``facts+ref`` format (claim-aligned reference support)."""
    if input_format not in REFERENCE_FORMATS:
        return None
    return dict(description_facts(sample["scene"]))


def canonical_of(sample: dict, text: str, input_format: str, prefix: str = "Answer:") -> Canonical:
    return canonical_response(text, sample_grid(sample), prefix, reference_of(sample, input_format))


def response_field(sample: dict, text: str, input_format: str, prefix: str = "Answer:") -> str:
    if input_format.startswith("facts"):
        return canonical_of(sample, text, input_format, prefix).text
    return text.strip()


def judge_input(sample: dict, response_a: str, response_b: str, input_format: str,
                prefix: str = "Answer:") -> JudgeInput:
    d, q = shared_fields(sample, input_format)
    if input_format == "facts+diff":
        ca, cb, _, _ = pair_diff(canonical_of(sample, response_a, input_format, prefix),
                                 canonical_of(sample, response_b, input_format, prefix))
        return JudgeInput(d, q, ca.text, cb.text)
    return JudgeInput(d, q, response_field(sample, response_a, input_format, prefix),
                      response_field(sample, response_b, input_format, prefix))


def render_prompt(template: str, ji: JudgeInput) -> str:
    """Fill the template. Raises a clear error when the template lacks a field (a recipe mistake).
    ``{description}`` alone may be left out: with ``facts+ref`` every claim and the question already carry
    the description's entries on their subjects, so the scene list adds only length (tiny recipe)."""
    for name in ("question", "response_a", "response_b"):
        if "{" + name + "}" not in template:
            raise ValueError(f"rscorer.prompt_template must contain {{{name}}}; got {template!r}")
    return template.format(description=ji.description, question=ji.question, response_a=ji.response_a,
                           response_b=ji.response_b)


def field_spans(template: str, ji: JudgeInput) -> tuple[str, dict[str, tuple[int, int]]]:
    """The prompt and the character span of each filled field, so a trainer can map words to tokens."""
    out, spans, pos = [], {}, 0
    for part in re.split(r"(\{\w+\})", template):
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1]
            value = getattr(ji, name)
            spans[name] = (pos, pos + len(value))
        else:
            value = part
        out.append(value)
        pos += len(value)
    return "".join(out), spans


# ---------------------------------------------------------------------------------------------------
# The closed vocabulary (for the tiny judge's tokenizer)
# ---------------------------------------------------------------------------------------------------
def fact_vocabulary(colors: Iterable[str], shapes_: Iterable[str], grid: int, max_value: int,
                    max_objects: int) -> list[str]:
    """Every word the fact language can produce for a world of this configuration."""
    from srcal.world import shapes as world

    colors, shapes_ = list(colors), list(shapes_)
    top = min(len(NUMBER_WORDS) - 1, max(2 * max_value + 1, grid * grid, max_objects + 1))
    words = set(NUMBER_WORDS[: top + 1]) | {UNKNOWN, OTHER, "so", "answer", "none", "is", "plus", "minus", "more",
                                            "less", "yes", "no", "nothing", "shape", "any", "barcount", "tallest",
                                            "shortest", "taller", "shorter"}
    words |= set(colors) | set(shapes_) | {cell_word(r, c, grid) for r in range(grid) for c in range(grid)}
    words |= {co + s for co in colors for s in shapes_}
    words |= {f"count{co}{s}" for co in ["any", *colors] for s in ["shape", *shapes_]}
    words |= {f"bar{co}" for co in colors} | {f"{a}vs{b}" for a in colors for b in colors if a != b}
    words |= {"q" + t.replace("_", "") for t in world.QUESTION_TEMPLATES}
    return sorted(words)
