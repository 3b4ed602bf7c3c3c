"""The SRC pipeline: wiring only (tasks, resources, secrets); every stage runs in ``srcal``.

Graph: the steps of ``srcal.graph.build_plan(recipe)`` — the same plan ``srcal run`` expands — one task
per step, named by its key (``round1/search`` → ``round1-search``), fed from the producers the plan names
(the table :data:`STAGE_OPS` maps each stage to its component and output). Rounds are unrolled at compile
time (KFP has no runtime loops), so the DAG is compiled for a recipe (``srcal pipeline compile --recipe``;
the checked-in YAML is the tiny recipe's, 3 rounds). A step that fans out (each round's search) becomes a
ParallelFor over ``shards`` plus ``search-merge``. Pipeline-only tasks, not stages of the method, stay here:
the shard indexes, ``rscorer-serve`` (the judge as a KServe InferenceService, after the judge step),
``export`` (after the report) and ``rscorer-teardown`` (exit handler: deletes the judge endpoint even if a
round failed)::

    data ─ base ─ rft ─┬─ eval-base, eval-rft
                       └─ rscorer-search ─ rscorer-data ─ rscorer-judge ─ rscorer-serve
    round k:  round<k>-search (ParallelFor + merge) ─ round<k>-score ─ round<k>-curate ─ round<k>-align ─ eval-round<k>
    report ─ export;  exit handler: rscorer-teardown

Components get their plan step key and resolve its options from the run's recipe
(``srcal.kubeflow.steps.run_step``), so options never diverge from ``srcal run``'s.

GPU steps (the plan's ``placement: gpu``: base, rft, eval, search, rscorer-train, align) get the accelerator type/count, the GPU
node selector, the GPU tolerations and a memory-backed /dev/shm from pipeline parameters
(kfp-kubernetes). Every other step gets the CPU node selector and no toleration, so it stays off
tainted GPU nodes. The judge's GPU is requested by the InferenceService that rscorer-serve creates,
not by the step's pod (which only talks to the Kubernetes API). The score steps are placed by their
own parameters (``score_*``): by default on the CPU pool without GPUs (they only call the KServe
judge); with ``judge_serving`` in-step on a cluster, point them at the GPU pool. Every step gets the S3 credentials
from the Kubernetes secret named by ``s3_secret`` (``use_secret_as_env``); no credential is in the YAML.
"""

from kfp import dsl, kubernetes

from components import TRAIN_IMAGE
from components.align import align_op
from components.base import base_op
from components.curate import curate_op
from components.data import data_op
from components.evaluate import eval_op
from components.report import export_op, report_op
from components.rft import rft_op
from components.rscorer_data import rscorer_data_op
from components.rscorer_serve import rscorer_serve_op, rscorer_teardown_op
from components.rscorer_train import rscorer_train_op
from components.score import score_op
from components.search import search_merge_op, search_op, shard_indexes_op
from srcal import graph
from srcal.config import load_recipe

PIPELINE_NAME = "srcal"
DEFAULT_RECIPE = "tiny"
DEFAULT_ROUNDS = 3
MAX_ROUNDS = 3  # the report component takes up to three rounds' artifacts (the paper runs three)

# Keys of the Kubernetes secret the steps read S3 credentials from (manifests/base/s3-secret.yaml).
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")

# Steps whose work is transient (network, API server, preemptible nodes): retried with backoff.
RETRIES = 2
# GPU steps: the stages the plan places on GPUs (srcal.graph), used by the tests and docs.
GPU_STEPS = ("base", "rft", "eval", "search", "rscorer-train", "align")

# stage -> (component, its main output, the small extract the report reads instead (None: the main
# output), the *_gpus parameter of GPU stages). search-merge is the fan-out's second half (search).
STAGE_OPS = {
    "data": (data_op, "data", "summary", None),
    "base": (base_op, "base", "summary", "base_gpus"),
    "rft": (rft_op, "rft", "summary", "rft_gpus"),
    "eval": (eval_op, "evaluation", None, "eval_gpus"),
    "search": (search_op, "candidates", None, "search_gpus"),
    "rscorer-data": (rscorer_data_op, "rscorer_data", None, None),
    "rscorer-train": (rscorer_train_op, "judge", "judge_eval", "rscorer_gpus"),
    "score": (score_op, "judgments", None, None),
    "curate": (curate_op, "pairs", None, None),
    "align": (align_op, "aligned", "summary", "align_gpus"),
    "report": (report_op, "report", None, None),
}
RETRIED = ("data", "eval", "search", "rscorer-data", "score")  # transient failures (network, preemption)


def _gpu(task: dsl.PipelineTask, gpus, p: dict) -> dsl.PipelineTask:
    """Put ``task`` on the GPU pool: accelerator limit, node selector, tolerations, memory-backed /dev/shm
    (NCCL and DataLoader workers need more shared memory than a pod's default 64 MiB).

    Each GPU component also takes its type and count as ordinary inputs. Besides letting the step
    check what it got, this works around a kfp 2.17 compiler gap: a parameter used only in
    ``set_accelerator_type/limit`` inside the exit handler or a loop is not declared as an input of
    that DAG, so the run cannot resolve it (kfp.local showed it; test_pipeline checks every DAG)."""
    task.set_accelerator_type(p["accelerator_type"]).set_accelerator_limit(gpus)
    kubernetes.add_node_selector_json(task, p["gpu_node_selector"])
    kubernetes.add_toleration_json(task, p["gpu_tolerations"])
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
    return task


def _cpu(task: dsl.PipelineTask, p: dict) -> dsl.PipelineTask:
    """Keep ``task`` off GPU nodes: the CPU pool selector and no GPU toleration."""
    kubernetes.add_node_selector_json(task, p["cpu_node_selector"])
    return task


def _score_placement(task: dsl.PipelineTask, p: dict) -> dsl.PipelineTask:
    """The score step serves the judge itself in the in-step modes, so its pool and GPUs are parameters
    of their own (default: CPU pool, no GPU, no toleration: right for ``judge_serving=kserve``)."""
    task.set_accelerator_type(p["accelerator_type"]).set_accelerator_limit(p["score_gpus"])
    kubernetes.add_node_selector_json(task, p["score_node_selector"])
    kubernetes.add_toleration_json(task, p["score_tolerations"])
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
    return task


def _common(task: dsl.PipelineTask, name: str, p: dict, *, retry: bool = False,
            cache: bool = True) -> dsl.PipelineTask:
    """Display name, S3 credentials from the secret, retries on transient steps, caching."""
    task.set_display_name(name)
    kubernetes.use_secret_as_env(task, secret_name=p["s3_secret"],
                                 secret_key_to_env={k: k for k in S3_SECRET_KEYS})
    if retry:
        task.set_retry(num_retries=RETRIES, backoff_duration="30s", backoff_factor=2.0,
                       backoff_max_duration="600s")
    task.set_caching_options(enable_caching=cache)
    return task


def build_pipeline(recipe: str = DEFAULT_RECIPE, rounds: int | None = None, overrides: list[str] | tuple = ()):
    """Return the pipeline function for ``recipe``'s plan (``rounds`` overrides its round count, 1 to
    :data:`MAX_ROUNDS`); the pipeline's ``recipe`` parameter defaults to that recipe."""
    rec = load_recipe(recipe, [*overrides, *([f"rounds={rounds}"] if rounds is not None else [])])
    rounds = rec.rounds
    if not 1 <= rounds <= MAX_ROUNDS:
        raise ValueError(f"rounds={rounds}: the pipeline supports 1 to {MAX_ROUNDS} rounds")
    plan = graph.build_plan(rec)
    recipe_name = recipe

    @dsl.pipeline(name=PIPELINE_NAME, description=(
        f"Self-Rationale Calibration (SRC) for vision-language models: RFT, R-Scorer, {rounds} rounds of "
        "sentence-level beam search, pairwise scoring, confidence-weighted curation and DPO+SFT."))
    def srcal_pipeline(
        recipe: str = recipe_name,
        overrides: str = "[]",
        base_model_uri: str = "",
        data_uri: str = "",
        shards: int = 2,
        judge_serving: str = "kserve",
        s3_secret: str = "srcal-s3",
        s3_prefix: str = "",
        accelerator_type: str = "nvidia.com/gpu",
        gpu_node_selector: dict = {"nvidia.com/gpu.present": "true"},  # noqa: B006 - KFP defaults
        gpu_tolerations: list = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],  # noqa: B006
        cpu_node_selector: dict = {},  # noqa: B006
        base_gpus: int = 1,
        rft_gpus: int = 1,
        eval_gpus: int = 1,
        search_gpus: int = 1,
        rscorer_gpus: int = 1,
        judge_gpus: int = 1,
        score_gpus: int = 0,
        score_node_selector: dict = {},  # noqa: B006
        score_tolerations: list = [],  # noqa: B006
        align_gpus: int = 1,
        train_nodes: int = 1,
        judge_runtime: str = "srcal-vllm",
        judge_service_account: str = "srcal-kserve-s3",
        judge_ready_timeout_s: int = 1800,
    ):
        """Parameters:

        recipe / overrides: shipped recipe name and a JSON list of ``key=value`` overrides.
        base_model_uri: overrides ``model.base`` (HF id, s3:// URI) when set.
        data_uri: a finished ``srcal data build`` artifact to reuse instead of building the splits.
        shards: ParallelFor width of the beam search per round.
        judge_serving: ``kserve`` (InferenceService) or ``in-step`` (each score step loads the judge).
        s3_secret: Kubernetes secret with AWS_* keys for the steps (manifests/base/s3-secret.yaml).
        s3_prefix: where export publishes report, final policy and judge metrics (empty: no export).
        accelerator_type, *_gpus, gpu_node_selector, gpu_tolerations: the GPU pool of the GPU steps.
        score_gpus / score_node_selector / score_tolerations: the score steps (GPU pool for in-step serving).
        cpu_node_selector: the pool of every other step. train_nodes > 1: rft/align as TrainJobs.
        judge_runtime / judge_service_account / judge_ready_timeout_s: the judge InferenceService.
        """
        p = dict(locals())
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        cfg = {"recipe": recipe, "overrides": overrides}

        teardown = rscorer_teardown_op(judge_serving=judge_serving, run_id=run_id)
        _cpu(_common(teardown, "rscorer-teardown", p, retry=True, cache=False), p)

        with dsl.ExitHandler(teardown, name="src"):
            _plan_tasks(plan, p, cfg, run_id)

    return srcal_pipeline


def _plan_tasks(plan: list, p: dict, cfg: dict, run_id) -> None:
    """One task per plan step, in plan order, wired from the producers the plan names, plus the
    pipeline-only tasks (judge endpoint after the judge step, export after the report)."""
    outs: dict[str, object] = {}  # step key -> its main output
    small: dict[str, object] = {}  # step key -> what the report reads (a small extract where there is one)
    serve = None
    for step in plan:
        op, out_name, small_name, gpus_param = STAGE_OPS[step.stage]
        name = graph.task_name(step.key)
        ins = {k: (small if step.stage == "report" else outs)[src] for k, src in step.inputs.items()}
        kw: dict = dict(cfg)
        if gpus_param:
            kw.update(accelerator_type=p["accelerator_type"], gpus=p[gpus_param])
        if step.options or step.fan_out:  # the component resolves them from its step key (run_step)
            kw["step"] = step.key
        if step.stage == "data":
            kw["data_uri"] = p["data_uri"]
        elif step.stage == "base":
            kw["base_model_uri"] = p["base_model_uri"]
        elif step.stage in ("rft", "align"):
            kw.update(num_nodes=p["train_nodes"], s3_secret=p["s3_secret"])
        elif step.stage == "score":
            kw.update(judge_serving=p["judge_serving"], judge_url=serve.output, accelerator_type=p["accelerator_type"],
                      gpus=p["score_gpus"])
        if step.fan_out:
            task, out = _fan_out(step, name, ins, kw, p)
        else:
            if step.stage == "search":
                kw.update(shard=0, shards=1)
            task = op(**kw, **ins)
            out = task.outputs[out_name]
            _common(task, name, p, retry=step.stage in RETRIED)
            if step.stage == "score":
                _score_placement(task, p)
            elif step.gpu:
                _gpu(task, p[gpus_param], p)
            else:
                _cpu(task, p)
            if step.stage in ("rft", "align"):
                task.set_env_variable("SRCAL_IMAGE", TRAIN_IMAGE)  # a multi-node TrainJob runs the same image
        outs[step.key] = out
        small[step.key] = task.outputs[small_name] if small_name and not step.fan_out else out
        if step.stage == "rscorer-train":
            # A cached score must never outlive the endpoint it was computed against: the URL is an input.
            serve = rscorer_serve_op(judge_serving=p["judge_serving"], run_id=run_id, judge=out,
                                     runtime=p["judge_runtime"], service_account=p["judge_service_account"],
                                     accelerator_type=p["accelerator_type"], gpus=p["judge_gpus"],
                                     node_selector=p["gpu_node_selector"], tolerations=p["gpu_tolerations"],
                                     ready_timeout_s=p["judge_ready_timeout_s"])
            _cpu(_common(serve, "rscorer-serve", p, retry=True, cache=False), p)
        if step.stage == "report":
            final = next(s.key for s in reversed(plan) if s.stage == "align")
            judge = next(s.key for s in plan if s.stage == "rscorer-train")
            export = export_op(s3_prefix=p["s3_prefix"], run_id=run_id, report=out, policy=outs[final],
                               judge_eval=small[judge])
            _cpu(_common(export, "export", p, retry=True, cache=False), p)


def _fan_out(step, name: str, ins: dict, kw: dict, p: dict):
    """A step over ``shards`` shards: shard indexes, a ParallelFor of the stage, ``search-merge`` of the
    collected outputs (task ``name``, the step's key: what consumers read). Returns (merge task, output)."""
    op, out_name, _, gpus_param = STAGE_OPS[step.stage]
    indexes = _cpu(_common(shard_indexes_op(shards=p["shards"]), f"{name}-shard-indexes", p), p)
    with dsl.ParallelFor(indexes.output, name=f"{name}-shards") as shard:
        task = op(**kw, shard=shard, shards=p["shards"], **ins)
        _gpu(_common(task, f"{name}-shard", p, retry=True), p[gpus_param], p)
    merge = search_merge_op(recipe=kw["recipe"], overrides=kw["overrides"], step=step.key,
                            shards=dsl.Collected(task.outputs[out_name]))
    _cpu(_common(merge, name, p), p)
    return merge, merge.outputs["candidates"]


srcal_pipeline = build_pipeline(DEFAULT_RECIPE)
