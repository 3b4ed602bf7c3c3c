"""The SRC method as one declarative plan of steps: what ``srcal run`` and the Kubeflow pipeline both build.

Why one plan: the stage graph used to be written twice (``srcal.run.flow.plan_run`` and the pipeline
module) and the two drifted — the pipeline never gave ``rscorer-data`` its candidates, so every real
recipe stopped there on a cluster (issue 12, bug 1). Now :func:`build_plan` is the only place that says
which stage runs, from which inputs, with which options; ``srcal.run.flow`` expands it into local steps
(:func:`expand`) and ``pipelines/srcal_pipeline.py`` turns each step into a KFP task, and
``tests/test_graph.py`` compiles the pipeline for every shipped recipe and compares its DAG with the plan.

A :class:`PlanStep` has a run-relative ``key`` (``"round1/search"``: its directory in a ``srcal run``
layout and, with ``/`` as ``-``, its task name in the pipeline), a ``stage`` (``srcal.stages.STAGES``),
``inputs`` as ``{input name: producer step key}``, string ``options``, a ``placement`` (``gpu``, ``cpu``,
or ``judge`` for ``score``: wherever the judge is served) and ``fan_out`` (search over ``search.shards``
shards merged by ``search-merge``).

The plan (both worlds)::

    data ─ base ─ eval/base
                └ rft ─ eval/rft
                      └ rscorer/search ─ rscorer/data ─ rscorer/judge
    round k = 1..rounds:  round<k>/search (fan-out) ─ score ─ curate ─ align ─ eval/round<k>
    report

**Where the judge's pairs come from** (issue 12, Build 2; issue 13, item 1): ``rscorer/search`` runs the
RFT policy on the **rft** split (``split=rft``, at most ``rscorer.policy_samples`` samples), and
``rscorer/data`` labels pairs of those candidates. Reasons: (1) the judge must see the distribution it
judges in a run — the policy's own candidates, not only teacher RAPs and their corruptions; (2) the RFT
pool is the largest split; (3) it is disjoint from calibration (which the rounds curate from) and eval by
construction, so no labelled pair leaks into curation or evaluation. The shapes world keeps its synthetic
teacher/corruption pairs besides (``srcal.scorer.data``). Round 1 still searches the calibration split
with the same RFT policy; ``rscorer/search`` is a separate step, not round 1's search.

``rscorer/search`` does not fan out: ``search``'s ``limit`` applies within a shard (the stage slices,
then limits), so a sharded run would take up to ``shards × limit`` samples.

Options are resolved from the recipe the step runs with: a KFP component receives its step key and
calls :func:`step_options` with the run's recipe (``srcal.kubeflow.steps.run_step``), so a submit-time
``--set rscorer.policy_samples=…`` reaches the step although the DAG was compiled earlier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Placement = Literal["gpu", "cpu", "judge"]


@dataclass(frozen=True)
class PlanStep:
    """One step of the method: ``stage`` from ``inputs`` (input name → producer step key)."""

    key: str
    stage: str
    inputs: dict[str, str]
    options: dict[str, str] = field(default_factory=dict)
    placement: Placement = "cpu"
    fan_out: bool = False

    @property
    def gpu(self) -> bool:
        return self.placement == "gpu"


@dataclass
class Step:
    """One stage invocation of an expanded plan: ``stage`` from ``inputs`` (name → URI) to ``output``."""

    key: str  # the run-relative output path, unique, e.g. "round1/search"
    stage: str
    inputs: dict[str, str]
    output: str
    options: dict[str, str] = field(default_factory=dict)


def round_names(recipe) -> list[str]:
    """Evaluated models in order: base, rft, round1 … round<rounds>."""
    return ["base", "rft"] + [f"round{k}" for k in range(1, recipe.rounds + 1)]


def task_name(key: str) -> str:
    """The pipeline task (display) name of a step: ``round1/search`` → ``round1-search``."""
    return key.replace("/", "-")


# Report inputs that are read for their summary.json timings only; the pipeline hands it a small extract
# of the producer where it has one (srcal.kubeflow.steps.extract_files), not the weights or the images.
TIMING_ONLY = ("data", "base", "rft", "rscorer_search", "rscorer_data")


def build_plan(recipe) -> list[PlanStep]:
    """The method for ``recipe`` as an ordered list of steps (a valid topological order).

    Evaluation of each model follows the step that made it, so a run killed late still has the earlier
    rounds' metrics. Round k searches with round k−1's policy (round 1: the RFT model) and trains round
    k's policy, referenced to round k−1's (srcal.align).
    """
    steps: list[PlanStep] = []

    def add(key: str, stage: str, inputs: dict[str, str], placement: Placement = "cpu", fan_out: bool = False,
            **options) -> str:
        steps.append(PlanStep(key, stage, dict(inputs), {k: str(v) for k, v in options.items()}, placement,
                              fan_out))
        return key

    data = add("data", "data", {})
    base = add("base", "base", {"data": data}, "gpu")
    add("eval/base", "eval", {"model": base, "base": base, "data": data}, "gpu", round="base")
    rft = add("rft", "rft", {"base": base, "data": data}, "gpu")
    add("eval/rft", "eval", {"model": rft, "base": base, "data": data}, "gpu", round="rft")
    # The judge's pairs: the RFT policy's candidates on RFT-split samples (module docstring).
    rsearch = add("rscorer/search", "search", {"policy": rft, "base": base, "data": data}, "gpu",
                  split="rft", shard="0/1", limit=recipe.rscorer.policy_samples)
    rdata = add("rscorer/data", "rscorer-data", {"data": data, "base": base, "rft": rft, "candidates": rsearch})
    judge = add("rscorer/judge", "rscorer-train", {"rscorer_data": rdata}, "gpu")
    policy = rft
    for k in range(1, recipe.rounds + 1):
        r = f"round{k}"
        cands = add(f"{r}/search", "search", {"policy": policy, "base": base, "data": data}, "gpu", fan_out=True,
                    split="calib", round=r)
        judg = add(f"{r}/score", "score", {"candidates": cands, "judge": judge, "data": data}, "judge")
        pairs = add(f"{r}/curate", "curate", {"judgments": judg, "candidates": cands, "data": data})
        policy = add(f"{r}/align", "align", {"pairs": pairs, "policy": policy, "base": base, "data": data}, "gpu",
                     round=r)
        add(f"eval/{r}", "eval", {"model": policy, "base": base, "data": data}, "gpu", round=r)
    report = {f"eval_{name}": f"eval/{name}" for name in round_names(recipe)}
    report["judge"] = judge
    for k in range(1, recipe.rounds + 1):
        for part in ("search", "score", "curate", "align"):
            report[f"round{k}_{part}"] = f"round{k}/{part}"
    for key in ("data", "base", "rft", "rscorer/search", "rscorer/data"):
        report[key.replace("/", "_")] = key
    add("report", "report", report)
    return steps


def step_options(recipe, key: str, shard: str | None = None) -> tuple[str, dict[str, str]]:
    """(stage, options) of plan step ``key`` for ``recipe``; ``shard="i/n"`` for one shard of a fan-out
    step (stage ``search``); a fan-out step without a shard is its merge (``search-merge``). A step that
    does not fan out accepts only its own ``shard`` option (``rscorer/search``: ``0/1``) or none."""
    by = {s.key: s for s in build_plan(recipe)}
    if key not in by:
        raise KeyError(f"step {key!r} is not in the plan of recipe {recipe.name!r} (rounds={recipe.rounds}); "
                       f"its steps: {sorted(by)}")
    step = by[key]
    if not step.fan_out:
        if shard not in (None, step.options.get("shard")):
            raise ValueError(f"step {key!r} does not fan out over shards; got shard={shard}")
        return step.stage, dict(step.options)
    if shard is None:
        return "search-merge", {}
    return step.stage, {**step.options, "shard": shard}


def expand(plan: list[PlanStep], shards: int, uri) -> list[Step]:
    """Local steps of ``plan``: a fan-out step becomes ``shards`` shard steps (``<key>-shards/<i>``) then
    ``search-merge`` at ``<key>`` when ``shards`` > 1, or one step with ``shard=0/1``; ``uri(rel)`` maps a
    run-relative key to the output URI."""
    out: list[Step] = []
    for s in plan:
        inputs = {name: uri(src) for name, src in s.inputs.items()}
        if not s.fan_out:
            out.append(Step(s.key, s.stage, inputs, uri(s.key), dict(s.options)))
        elif shards == 1:
            out.append(Step(s.key, s.stage, inputs, uri(s.key), {**s.options, "shard": "0/1"}))
        else:
            parts = {}
            for i in range(shards):
                key = f"{s.key}-shards/{i}"
                out.append(Step(key, s.stage, inputs, uri(key), {**s.options, "shard": f"{i}/{shards}"}))
                parts[f"shard{i}"] = uri(key)
            out.append(Step(s.key, "search-merge", parts, uri(s.key), {}))
    return out
