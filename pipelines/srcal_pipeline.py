"""The SRC pipeline: wiring only (tasks, resources, secrets); every stage runs in ``srcal``.

Graph (rounds unrolled at compile time; KFP has no runtime loops)::

    data ─ base ─ rft ─┬─ eval(base), eval(rft)
                       └─ rscorer-data ─ rscorer-train ─ rscorer-serve (KServe)
    round k = 1..3:  search shards (ParallelFor) ─ search-merge ─ score ─ curate ─ align ─ eval(round k)
    report ─ export;  exit handler: rscorer-teardown (deletes the judge endpoint even if a round failed)

GPU steps (base, rft, eval, search, rscorer-train, align) get the accelerator type/count, the GPU
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

PIPELINE_NAME = "srcal"
DEFAULT_ROUNDS = 3
MAX_ROUNDS = 3  # the report component takes up to three rounds' artifacts (the paper runs three)

# Keys of the Kubernetes secret the steps read S3 credentials from (manifests/base/s3-secret.yaml).
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")

# Steps whose work is transient (network, API server, preemptible nodes): retried with backoff.
RETRIES = 2
# GPU steps: display-name prefixes, used by the tests and docs to check exactly these carry GPU settings.
GPU_STEPS = ("base", "rft", "eval", "search", "rscorer-train", "align")


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


def build_pipeline(rounds: int = DEFAULT_ROUNDS):
    """Return the pipeline function with ``rounds`` unrolled SRC rounds (1 to :data:`MAX_ROUNDS`)."""
    if not 1 <= rounds <= MAX_ROUNDS:
        raise ValueError(f"rounds={rounds}: the pipeline supports 1 to {MAX_ROUNDS} rounds")

    @dsl.pipeline(name=PIPELINE_NAME, description=(
        f"Self-Rationale Calibration (SRC) for vision-language models: RFT, R-Scorer, {rounds} rounds of "
        "sentence-level beam search, pairwise scoring, confidence-weighted curation and DPO+SFT."))
    def srcal_pipeline(
        recipe: str = "tiny",
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
            data = _cpu(_common(data_op(**cfg, data_uri=data_uri), "data", p, retry=True), p)
            data_a = data.outputs["data"]
            base = _gpu(_common(base_op(**cfg, accelerator_type=accelerator_type, gpus=base_gpus, base_model_uri=base_model_uri, data=data_a), "base", p),
                        base_gpus, p)
            base_a = base.outputs["base"]
            rft = _gpu(_common(rft_op(**cfg, accelerator_type=accelerator_type, gpus=rft_gpus, num_nodes=train_nodes, s3_secret=s3_secret, base=base_a, data=data_a),
                               "rft", p), rft_gpus, p)
            rft.set_env_variable("SRCAL_IMAGE", TRAIN_IMAGE)  # a multi-node TrainJob runs the same image

            def evaluate(name: str, model):
                t = eval_op(**cfg, round_name=name, accelerator_type=accelerator_type, gpus=eval_gpus, model=model, base=base_a, data=data_a)
                return _gpu(_common(t, f"eval-{name}", p, retry=True), eval_gpus, p)

            eval_base = evaluate("base", base_a)
            eval_rft = evaluate("rft", rft.outputs["rft"])

            rdata = _cpu(_common(rscorer_data_op(**cfg, data=data_a, base=base_a, rft=rft.outputs["rft"]),
                                 "rscorer-data", p, retry=True), p)
            rtrain = _gpu(_common(rscorer_train_op(**cfg, accelerator_type=accelerator_type, gpus=rscorer_gpus, rscorer_data=rdata.outputs["rscorer_data"]),
                                  "rscorer-train", p), rscorer_gpus, p)
            judge = rtrain.outputs["judge"]
            serve = rscorer_serve_op(judge_serving=judge_serving, run_id=run_id, judge=judge,
                                     runtime=judge_runtime, service_account=judge_service_account,
                                     accelerator_type=accelerator_type, gpus=judge_gpus,
                                     node_selector=gpu_node_selector, tolerations=gpu_tolerations,
                                     ready_timeout_s=judge_ready_timeout_s)
            _cpu(_common(serve, "rscorer-serve", p, retry=True, cache=False), p)
            # A cached score must never outlive the endpoint it was computed against: the URL is an input.

            policy = rft.outputs["rft"]
            per_round: dict[str, object] = {}
            for k in range(1, rounds + 1):
                r = f"round{k}"
                indexes = _cpu(_common(shard_indexes_op(shards=shards), f"{r}-shards", p), p)
                with dsl.ParallelFor(indexes.output, name=f"{r}-search") as shard:
                    search = search_op(**cfg, round_name=r, accelerator_type=accelerator_type, gpus=search_gpus, shard=shard, shards=shards, policy=policy, base=base_a, data=data_a)
                    _gpu(_common(search, f"search-{r}", p, retry=True), search_gpus, p)
                merge = _cpu(_common(search_merge_op(**cfg, shards=dsl.Collected(search.outputs["candidates"])),
                                     f"search-merge-{r}", p), p)
                cands = merge.outputs["candidates"]
                score = score_op(**cfg, judge_serving=judge_serving, judge_url=serve.output,
                                 accelerator_type=accelerator_type, gpus=score_gpus, candidates=cands, judge=judge,
                                 data=data_a)
                _score_placement(_common(score, f"score-{r}", p, retry=True), p)
                curate = _cpu(_common(curate_op(**cfg, judgments=score.outputs["judgments"], candidates=cands,
                                                data=data_a), f"curate-{r}", p), p)
                align = _gpu(_common(align_op(**cfg, round_name=r, accelerator_type=accelerator_type, gpus=align_gpus, num_nodes=train_nodes, s3_secret=s3_secret,
                                              pairs=curate.outputs["pairs"], policy=policy, base=base_a,
                                              data=data_a), f"align-{r}", p), align_gpus, p)
                align.set_env_variable("SRCAL_IMAGE", TRAIN_IMAGE)
                policy = align.outputs["aligned"]
                ev = evaluate(r, policy)
                # Report inputs named as `srcal run` names them (srcal.flow.plan_run).
                per_round.update({f"eval_{r}": ev.outputs["evaluation"], f"{r}_search": cands,
                                  f"{r}_score": score.outputs["judgments"], f"{r}_curate": curate.outputs["pairs"],
                                  f"{r}_align": align.outputs["summary"]})

            report = report_op(**cfg, judge=rtrain.outputs["judge_eval"], eval_base=eval_base.outputs["evaluation"],
                               eval_rft=eval_rft.outputs["evaluation"], **per_round)
            _cpu(_common(report, "report", p), p)
            export = export_op(s3_prefix=s3_prefix, run_id=run_id, report=report.outputs["report"], policy=policy,
                               judge_eval=rtrain.outputs["judge_eval"])
            _cpu(_common(export, "export", p, retry=True, cache=False), p)

    return srcal_pipeline


srcal_pipeline = build_pipeline(DEFAULT_ROUNDS)
