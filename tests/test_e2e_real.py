"""The real recipes end to end: ``srcal run --recipe <llava-1.5-7b | llava-next-8b | qwen2.5-vl-7b>`` on CPU.

What is real here: the shipped recipe files, changed only by ``--set`` overrides of sizes, device and
endpoints (:func:`dry_run_overrides`, the list docs/real-models.md gives users); the architectures,
processors, tokenizers and chat templates of the releases, shrunk to 2 layers with random weights
(``srcal.models.shrunk``); parquet releases laid out and mixed like the public ones, with the images real
releases carry (``tests/real_data.py``); the teacher, labeller and judge as OpenAI-compatible HTTP servers
on loopback (``tests/loopback_openai.py``), the judge being the one this run trains, served over HTTP as
the recipes' ``rscorer.serve: openai`` says; the CLI in a subprocess, as a user runs it.

Random weights cannot answer anything right, so the dry run also relaxes curation's quality gates
(``curate.require_correct=false``, margins 0, ``min_pairs=1``); every other value is the recipe's.

Issue 16's architectures (Gemma 3, Qwen3-VL, LLaVA-OneVision) run the same way from the template recipe,
which names only the checkpoint (``model.family`` unset).

Each test asserts that every step of every round ran and that metrics.json has every round; the stage
timings are written to ``<run>/e2e-timings.json`` (summarised in docs/real-models.md and, for the new
architectures, docs/new-base-model.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import real_data
from loopback_openai import JudgeServer, Labeller, Teacher
from real_models import LLAVA15, LLAVA_NEXT, QWEN25_JUDGE, QWEN25_VL, shrunk_model
from test_new_families import GEMMA3, ONEVISION, QWEN3_VL

RELEASES = {"llava-1.5-7b": LLAVA15, "llava-next-8b": LLAVA_NEXT, "qwen2.5-vl-7b": QWEN25_VL}
# Issue 16's architectures, run from the template recipe (the one a user copies for a new base model).
TEMPLATE = Path(__file__).resolve().parents[1] / "src" / "srcal" / "recipes" / "template.yaml"
NEW_RELEASES = (GEMMA3, QWEN3_VL, ONEVISION)
NEW_IN_CI = (QWEN3_VL,)  # the cheapest; Gemma 3 and LLaVA-OneVision are `slow` (docs/new-base-model.md, "End to end")
ROUNDS = int(os.environ.get("SRCAL_E2E_ROUNDS", "3"))
ROWS = 8  # rows per source release: 2:1:1 splits of 8 / 4 / 4 need 8 perception, 4 chart, 4 math
SCALE = 0.5  # image sizes × 0.5: wide 512×288 … square 500×500 (1:1 sizes run in test_adapters)


def dry_run_overrides(*, model: str, judge: str, sources: list[Path], teacher: str, labeller: str,
                      judge_url: str, rounds: int = ROUNDS) -> list[str]:
    """The ``--set`` overrides that turn a shipped real recipe into a CPU dry run (one value each)."""
    return [
        # where it runs and what it loads
        "device=cpu", "model.dtype=float32", f"model.base={model}", f"rscorer.base={judge}",
        *(f"data.sources.{i}.path={p}" for i, p in enumerate(sources)),
        # endpoints
        f"teacher.url={teacher}", f"labeller.url={labeller}", f"rscorer.url={judge_url}",
        # sizes
        f"rounds={rounds}", "data.rft_size=4", "data.calib_size=3", "data.eval_size=4",
        "rft.batch_size=2", "rft.grad_accum=1", "align.batch_size=2", "align.grad_accum=1",
        "search.engine=hf", "search.shards=1", "search.beams=2", "search.n_candidates=2",
        "search.max_sentence_tokens=6", "search.max_sentences=2", "search.batch_size=4",
        "rscorer.n_train_pairs=8", "rscorer.n_heldout_pairs=2", "rscorer.steps=2", "rscorer.batch_size=2",
        "eval.batch_size=4", "eval.max_new_tokens=12",
        # random weights answer nothing right: curation's quality gates off
        "curate.require_correct=false", "curate.min_margin=0", "curate.min_confidence=0", "curate.min_pairs=1",
    ]


def _new_params():
    return [pytest.param(r, marks=() if r in NEW_IN_CI else pytest.mark.slow, id=r.split("/")[-1])
            for r in NEW_RELEASES]


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """The five sources of the real recipes as hub-like parquet directories, and question → answer."""
    from srcal.data.adapters import read_source

    root = tmp_path_factory.mktemp("releases")
    dirs = real_data.write_recipe_sources(root, ROWS, scale=SCALE)
    answers: dict[str, str] = {}
    for (adapter, category, _), d in zip(real_data.RECIPE_SOURCES, dirs, strict=True):
        rows, _ = read_source(adapter, str(d), category=category, out_dir=root / ".answers",
                              max_rejected_share=0.0)
        answers.update({r["question"]: r["answer"] for r in rows})
    return dirs, answers


def _children_cpu_s() -> float:
    """User + system CPU seconds of finished child processes: unlike wall time, it does not grow when other
    jobs share the machine, so it is the number to compare with a CI budget (wall ≈ cpu / cores in use)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _timings(out: Path) -> dict:
    """Seconds per step (from metrics.json's run rows) and per stage kind."""
    metrics = json.loads((out / "metrics.json").read_text())
    steps = {r["step"]: r["seconds"] for r in metrics["run"]["steps"]}
    by_stage: dict[str, float] = {}
    for r in metrics["run"]["steps"]:
        by_stage[r["stage"]] = round(by_stage.get(r["stage"], 0.0) + r["seconds"], 1)
    return {"wall_s": metrics["run"]["wall_s"], "by_stage": by_stage, "steps": steps}


@pytest.mark.timeout(1800)  # LLaVA-NeXT nears the 900 s default on a loaded 2-core machine (docs/real-models.md)
@pytest.mark.parametrize("recipe", list(RELEASES))
def test_real_recipe_runs_every_step_on_cpu(recipe, tmp_path, releases):
    _run_every_step(recipe, shrunk_model(RELEASES[recipe]), tmp_path, releases)


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("release", _new_params())
def test_template_recipe_runs_every_step_on_a_new_architecture(release, tmp_path, releases):
    """Issue 16: the shipped template, copied as a user copies it, naming only the checkpoint
    (``--set model.base=<shrunken dir>``, no ``model.family``: the architecture comes from its config.json),
    with the same dry-run overrides and assertions as the shipped families above."""
    from srcal.config import load_recipe

    recipe = tmp_path / "my-model.yaml"
    recipe.write_text(TEMPLATE.read_text())
    assert load_recipe(str(recipe)).model.family == ""  # the architecture is read from the checkpoint
    _run_every_step(str(recipe), shrunk_model(release), tmp_path, releases, label=release)


def _run_every_step(recipe: str, model: Path, tmp_path: Path, releases, *, label: str | None = None) -> None:
    """``srcal run --recipe <recipe>`` with :func:`dry_run_overrides` in a subprocess; asserts every step of
    every round ran against the loopback endpoints and writes ``<run>/e2e-timings.json``."""
    dirs, answers = releases
    judge = shrunk_model(QWEN25_JUDGE)
    out = tmp_path / "run"
    env = {**os.environ, "SRCAL_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "2",
           "TOKENIZERS_PARALLELISM": "false"}
    with Teacher(answers) as teacher, Labeller(answers) as labeller, \
            JudgeServer(out / "rscorer" / "judge") as judge_srv:
        sets = dry_run_overrides(model=str(model), judge=str(judge), sources=dirs, teacher=teacher.url,
                                 labeller=labeller.url, judge_url=judge_srv.url)
        argv = [sys.executable, "-m", "srcal.cli", "run", "--recipe", recipe, "--out", str(out),
                *(a for s in sets for a in ("--set", s))]
        t0, cpu0 = time.time(), _children_cpu_s()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=1700, env=env, check=False)
        wall, cpu = time.time() - t0, _children_cpu_s() - cpu0
    (tmp_path / "stderr.log").write_text(proc.stderr)
    assert proc.returncode == 0, proc.stderr[-6000:]
    metrics = json.loads((out / "metrics.json").read_text())
    names = [r["name"] for r in metrics["rounds"]]
    assert names == ["base", "rft", *(f"round{k}" for k in range(1, ROUNDS + 1))], names
    steps = metrics["run"]["steps"]
    assert steps and all(r["status"] == "ran" for r in steps), [r for r in steps if r["status"] != "ran"]
    for k in range(1, ROUNDS + 1):
        for part in ("search", "score", "curate", "align"):
            assert (out / f"round{k}" / part / "summary.json").exists(), f"round{k}/{part}"
    # The endpoints were really used: the teacher saw every RFT image, the labeller labelled pairs, and
    # every judgment of every round came from the HTTP judge.
    assert len(teacher.image_sizes) >= 4 and len(labeller.verdicts) >= 1
    n_judged = sum(sum(1 for line in (out / f"round{k}" / "score" / "judgments.jsonl").read_text().splitlines()
                       if line.strip()) for k in range(1, ROUNDS + 1))
    assert n_judged >= 1 and len(judge_srv.requests) >= n_judged
    timings = {"recipe": label or recipe, "test_wall_s": round(wall, 1), "cpu_s": round(cpu, 1), **_timings(out)}
    (out / "e2e-timings.json").write_text(json.dumps(timings, indent=2))
    print(json.dumps(timings))


def test_standin_teacher_and_labeller_speak_the_clients_wire_format(tmp_path):
    """srcal's own clients against the stand-ins: the teacher's RAP ends in the row's answer and names the
    image size it decoded; the labeller's verdict comes back as log-probs 0.8 / 0.1 / 0.1, which
    ``OpenAIClient.verdict`` renormalises over A, B, C to 0.8 / 0.1 / 0.1 (they already sum to 1)."""
    from srcal.serve.client import OpenAIClient, user_message
    from srcal.config import LabellerConfig

    img = tmp_path / "x.png"
    img.write_bytes(real_data.real_image("tall", 0, 0.25))
    answers = {"Which stage is 2? — 東京": "nymphe"}
    prompt = LabellerConfig().prompt
    right, wrong = "It is a pupa.\nAnswer: nymphe", "It is an egg.\nAnswer: œuf"
    with Teacher(answers) as teacher, Labeller(answers) as labeller:
        with OpenAIClient(teacher.url, "teacher", retries=0) as c:
            rap = c.chat_text([user_message("Question: Which stage is 2? — 東京", [img])])
        assert rap.endswith("Answer: nymphe") and "120 by 160 pixels" in rap
        with OpenAIClient(labeller.url, "labeller", retries=0) as c:
            def verdict(a, b):
                text = prompt.format(description="", question="Which stage is 2? — 東京", response_a=a, response_b=b)
                return c.verdict(["A", "B", "C"], messages=[{"role": "user", "content": text}])

            assert verdict(right, wrong) == pytest.approx({"A": 0.8, "B": 0.1, "C": 0.1})
            assert verdict(wrong, right) == pytest.approx({"A": 0.1, "B": 0.8, "C": 0.1})
            assert verdict(wrong, wrong)["C"] == pytest.approx(0.8)
    assert labeller.verdicts == ["A", "B", "C"]


@pytest.mark.slow
def test_llava15_through_the_kfp_local_pipeline(tmp_path, releases, s3_bucket):
    """The compiled pipeline of the llava-1.5-7b recipe under kfp.local's SubprocessRunner, every stage real,
    with the same dry-run overrides (as the pipeline's JSON ``overrides``) and loopback endpoints; the judge
    is served in-step (no KServe here). Asserts every round reached the report and the export landed in S3."""
    from kfp import local

    from srcal.kubeflow import client as kp
    from srcal.run import store

    dirs, answers = releases
    model, judge = shrunk_model(LLAVA15), shrunk_model(QWEN25_JUDGE)
    root = tmp_path / "kfp-root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    with Teacher(answers) as teacher, Labeller(answers) as labeller:
        sets = dry_run_overrides(model=str(model), judge=str(judge), sources=dirs, teacher=teacher.url,
                                 labeller=labeller.url, judge_url="http://127.0.0.1:9/v1")
        pipe = kp.build_pipeline("llava-1.5-7b", overrides=sets)
        no_gpus = {f"{s}_gpus": 0 for s in ("base", "rft", "eval", "search", "rscorer", "judge", "align")}
        t0 = time.time()
        pipe(recipe="llava-1.5-7b", overrides=json.dumps(sets), shards=1, judge_serving="in-step",
             s3_prefix=f"{s3_bucket}/kfp-llava15", **no_gpus)
        wall = time.time() - t0
    (run_dir,) = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("srcal-")]
    metrics = json.loads(next(run_dir.glob("report-op/report/metrics.json")).read_text())
    assert [r["name"] for r in metrics["rounds"]] == ["base", "rft", *(f"round{k}" for k in range(1, ROUNDS + 1))]
    assert len(teacher.image_sizes) >= 4 and len(labeller.verdicts) >= 1
    bucket_keys = [k for k in store.s3_client().list_objects_v2(
        Bucket=store.split_s3(s3_bucket)[0], Prefix="kfp-llava15/").get("Contents", [])]
    assert bucket_keys, "the export step published nothing"
    print(f"kfp.local llava-1.5-7b run: {wall:.1f} s")
