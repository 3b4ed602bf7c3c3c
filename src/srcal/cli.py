"""The ``srcal`` command.

Only argparse and the recipe module are imported at start-up; each command imports what it needs
inside its handler, so ``srcal --help`` answers fast (no torch, kfp, prefect, vllm or deepspeed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def _recipe(args):
    from srcal.config import load_recipe

    return load_recipe(args.recipe, args.set)


def _add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default="tiny", help="shipped recipe name or a YAML path (default: tiny)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value by dotted key, e.g. --set align.beta=0.2 (repeatable)")


def _parse_kv(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"srcal: {flag} {item!r}: expected NAME=URI")
        k, v = item.split("=", 1)
        out[k] = v
    return out


# ---------------------------------------------------------------------------------------------- handlers


def cmd_recipe_keys(args) -> int:
    from srcal.config import describe

    for key, default, help_ in describe():
        print(f"{key:40s} {json.dumps(default, default=str):30s} {help_}")
    return 0


def cmd_recipe_show(args) -> int:
    import yaml

    print(yaml.safe_dump(_recipe(args).to_dict(), sort_keys=False))
    return 0


def cmd_model_shrink(args) -> int:
    from srcal.models.capabilities import UnsupportedArchitecture
    from srcal.models.shrunk import TokenizersMissing, shrink_checkpoint

    try:
        out, note = shrink_checkpoint(args.config, args.out, layers=args.layers, seed=args.seed)
    except (UnsupportedArchitecture, TokenizersMissing, FileNotFoundError, ValueError) as e:
        print(f"srcal model shrink: error: {e}", file=sys.stderr)
        return 2
    print(f"srcal model shrink: {args.layers}-layer random-weight copy; {note}. Dry run: --set model.base={out} "
          "(docs/new-base-model.md)", file=sys.stderr)
    print(out)
    return 0


def cmd_data_build(args) -> int:
    from srcal import stages

    summary = stages.execute("data", _recipe(args), {}, args.out, force=args.force)
    print(json.dumps({k: summary[k] for k in ("counts", "rejected") if k in summary}, indent=2))
    print(args.out)
    return 0


def cmd_stage(args) -> int:
    from srcal import stages

    options = _parse_kv(args.option, "--option")
    summary = stages.execute(args.name, _recipe(args), _parse_kv(args.input, "--input"), args.output,
                             force=args.force, **options)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_eval(args) -> int:
    """``srcal eval``: the ``eval`` stage on given artifacts; prints the round entry of metrics.json."""
    from srcal import stages
    from srcal.run import store

    inputs = {"model": args.model, "base": args.base or args.model, "data": args.data}
    options = {"round": args.round, "split": args.split}
    if args.limit:
        options["limit"] = str(args.limit)
    stages.execute("eval", _recipe(args), inputs, args.out, force=args.force, **options)
    entry = store.read_json(args.out, "metrics.json")["rounds"][0]
    print(json.dumps({k: v for k, v in entry.items() if k != "per_category"}, indent=2))
    print(args.out)
    return 0


def cmd_compare(args) -> int:
    from srcal.report import write_comparison

    try:
        _, md = write_comparison(args.runs, args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"srcal compare: error: {e}", file=sys.stderr)
        return 2
    print(md)
    return 0


def cmd_run(args) -> int:
    from srcal import preflight
    from srcal.run import flow

    recipe = _recipe(args)
    preflight.check(recipe)  # missing paths, processors or endpoints: one error before any stage runs
    result = flow.run_flow(recipe, args.out, retries=args.retries, force=args.force, seed_run=args.from_run)
    ran = sum(1 for r in result["steps"] if r["status"] == "ran")
    print(f"srcal run: {ran} of {len(result['steps'])} steps ran, the rest were complete; "
          f"{result['wall_s']:.0f} s. metrics.json, report.md, report.html in:", file=sys.stderr)
    print(result["out"])
    return 0


def cmd_pipeline(args) -> int:
    """``srcal pipeline compile|submit|schedule``: every check runs before anything is uploaded."""
    import contextlib

    from srcal.kubeflow import client as kp

    try:
        if args.pipeline_command == "compile":
            out = kp.compile_pipeline(args.output, recipe=args.recipe, rounds=args.rounds, overrides=args.set,
                                      image_tag=args.image_tag, registry=args.registry)
            print(out)
            return 0
        _pipeline_preflight(args.recipe, args.set)
        common = {"host": args.host, "recipe": args.recipe, "overrides": args.set, "s3_secret": args.s3_secret,
                  "package": args.package, "params": kp.parse_params(args.param), "token": args.token,
                  "namespace": args.namespace}
        # kfp.Client prints links to stdout; send them to stderr so stdout is only the JSON result.
        with contextlib.redirect_stdout(sys.stderr):
            if args.pipeline_command == "submit":
                res = kp.submit(**common, experiment=args.experiment, run_name=args.run_name,
                                pipeline_root=args.pipeline_root, service_account=args.service_account,
                                enable_caching=False if args.no_cache else None)
            else:
                res = kp.schedule(**common, cron=args.cron, experiment=args.experiment, job_name=args.job_name,
                                  version_name=args.version, max_concurrency=args.max_concurrency,
                                  enable_caching=args.cache)
    except kp.PipelineError as e:
        print(f"srcal: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=2))
    return 0


def _pipeline_preflight(recipe: str, overrides: list[str]) -> None:
    """The checks that hold off-cluster (S3 sources); an unusable recipe is left to submit's own errors."""
    from srcal import preflight
    from srcal.config import RecipeError, load_recipe

    try:
        rec = load_recipe(recipe, overrides)
    except RecipeError:
        return
    preflight.check(rec, where="pipeline")


def _add_pipeline_parser(sub) -> None:
    pp = sub.add_parser("pipeline", help="compile, submit or schedule the Kubeflow pipeline")
    psub = pp.add_subparsers(dest="pipeline_command", required=True)
    c = psub.add_parser("compile", help="compile pipelines/srcal_pipeline.py to YAML (default: the checked-in file)")
    c.add_argument("--output", default=None, help="YAML path (default: pipelines/srcal_pipeline.yaml)")
    # The compiled DAG depends on the recipe only through its round count (every other option is read from
    # the run's recipe inside the components, srcal.graph.step_options), so --recipe sets the default rounds.
    _add_recipe_args(c)
    c.add_argument("--rounds", type=int, default=None, help="SRC rounds to unroll (1-3, default: the recipe's)")
    c.add_argument("--image-tag", default=None, help="tag of the images built by images/build.sh (git sha)")
    c.add_argument("--registry", default=None, help="registry/repository prefix of the images")
    c.set_defaults(func=cmd_pipeline)
    for name, help_ in (("submit", "create one run of the compiled pipeline"),
                        ("schedule", "upload a pipeline version and create an enabled recurring run")):
        s = psub.add_parser(name, help=help_)
        _add_recipe_args(s)
        s.add_argument("--host", default=None, help="KFP API URL (default: $KF_PIPELINES_ENDPOINT)")
        s.add_argument("--token", default=None, help="bearer token (default: $KF_PIPELINES_TOKEN)")
        s.add_argument("--namespace", default=None, help="Kubeflow profile namespace (multi-user)")
        s.add_argument("--s3-secret", default="srcal-s3", help="Kubernetes secret with the AWS_* keys (default srcal-s3)")
        s.add_argument("--package", default=None, help="compiled YAML (default: pipelines/srcal_pipeline.yaml)")
        s.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                       help="another pipeline parameter, JSON-parsed, e.g. --param shards=8 (repeatable)")
        s.add_argument("--experiment", default="srcal" if name == "submit" else "srcal-scheduled")
        if name == "submit":
            s.add_argument("--run-name", default=None)
            s.add_argument("--pipeline-root", default=None, help="override kfp-launcher's defaultPipelineRoot")
            s.add_argument("--service-account", default=None)
            s.add_argument("--no-cache", action="store_true", help="disable step caching for this run")
        else:
            s.add_argument("--cron", required=True, help="six fields, seconds first: '0 0 2 * * *' = 02:00 daily")
            s.add_argument("--job-name", default="srcal-nightly")
            s.add_argument("--version", default=None, help="pipeline version name (default: v-<UTC time>)")
            s.add_argument("--max-concurrency", type=int, default=1)
            s.add_argument("--cache", action="store_true", help="allow step caching (off by default for schedules)")
        s.set_defaults(func=cmd_pipeline)


def cmd_bench(args) -> int:
    from srcal import bench

    result = bench.run(args.what, _recipe(args), json_path=args.json, arch=args.arch,
                       random_weights=args.random_weights, **_parse_kv(args.option, "--option"))
    print(json.dumps(result, indent=2, default=str))
    return 0


def _add_bench_parser(sub) -> None:
    from srcal.bench import BENCHMARKS

    bp = sub.add_parser("bench", help="measure ours against a baseline on the same inputs; writes JSON",
                        description="Benchmarks: " + ", ".join(sorted(BENCHMARKS)) + ". Output: {name, machine, "
                        "baseline, ours, speedup} (srcal.bench), baseline and ours measured in the same run.")
    bp.add_argument("what", choices=sorted(BENCHMARKS), help="what to benchmark")
    _add_recipe_args(bp)
    bp.add_argument("--json", default=None, help="write the result to this file")
    bp.add_argument("--arch", default=None, help="a real-size architecture with random weights, e.g. llava-1.5-7b")
    bp.add_argument("--random-weights", action="store_true", help="with --arch: build the model from its config")
    bp.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="benchmark option, e.g. --option samples=8 (repeatable)")
    bp.set_defaults(func=cmd_bench)


# ---------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="srcal",
        description="Self-Rationale Calibration for vision-language models: run the method locally, "
        "run one stage as a pipeline component would, benchmark, or compile/submit the Kubeflow pipeline.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--debug", action="store_true",
                   help="debug logging, and the full traceback of expected errors (data, recipe, store, …)")
    sub = p.add_subparsers(dest="command", required=True)

    rp = sub.add_parser("recipe", help="inspect recipes")
    rsub = rp.add_subparsers(dest="recipe_command", required=True)
    r1 = rsub.add_parser("show", help="print the resolved recipe (after overrides)")
    _add_recipe_args(r1)
    r1.set_defaults(func=cmd_recipe_show)
    r2 = rsub.add_parser("keys", help="list every recipe key with its default and meaning")
    r2.set_defaults(func=cmd_recipe_keys)

    mp = sub.add_parser("model", help="base models")
    msub = mp.add_subparsers(dest="model_cmd", required=True)
    ms = msub.add_parser("shrink", help="a shrunken random-weight copy of a supported architecture, for a CPU dry "
                         "run (docs/new-base-model.md)")
    ms.add_argument("--config", required=True, help="the checkpoint directory or its config.json")
    ms.add_argument("--out", required=True, help="directory to write the shrunken model to")
    ms.add_argument("--layers", type=int, default=2, help="language-model and vision-tower layers (default 2)")
    ms.add_argument("--seed", type=int, default=0)
    ms.set_defaults(func=cmd_model_shrink)

    dp = sub.add_parser("data", help="datasets")
    dsub = dp.add_subparsers(dest="data_command", required=True)
    db = dsub.add_parser("build", help="write rft.jsonl, calib.jsonl, eval.jsonl (+ images) to --out")
    _add_recipe_args(db)
    db.add_argument("--out", required=True, help="local directory or s3://bucket/prefix")
    db.add_argument("--force", action="store_true", help="rebuild even if a complete artifact exists")
    db.set_defaults(func=cmd_data_build)

    run = sub.add_parser("run", help="the whole method locally (Prefect), resumable; prints the run directory",
                         description="Run data → base → RFT → R-Scorer → rounds of search/score/curate/align, "
                         "evaluating every model; writes metrics.json, report.md, report.html. A re-run with "
                         "the same recipe skips every finished step and redoes only what changed.")
    _add_recipe_args(run)
    run.add_argument("--out", default=None, help="run directory: local path or s3://bucket/prefix "
                     "(default: ./runs/<recipe>)")
    run.add_argument("--retries", type=int, default=1, help="retries per step for transient failures (default 1)")
    run.add_argument("--force", action="append", default=[], metavar="STEP",
                     help="recompute this step even if complete, e.g. --force round1/align (repeatable)")
    run.add_argument("--from", dest="from_run", default=None, metavar="RUN_DIR",
                     help="start from a copy of another local run's finished artifacts (ablations: only the "
                     "steps the --set overrides affect are recomputed)")
    run.set_defaults(func=cmd_run)

    ev = sub.add_parser("eval", help="evaluate a model on a held-out split: accuracy, RAP format, rationale "
                        "factuality/consistency with 95%% CIs; writes metrics.json and predictions.jsonl",
                        description="Greedy answers to the plain question (no format prompt). --model is a base "
                        "artifact (HF dir or srcal_model.json pointer) or a model artifact (LoRA stack) over --base.")
    _add_recipe_args(ev)
    ev.add_argument("--model", required=True, help="model artifact or base artifact (local dir or s3://)")
    ev.add_argument("--base", default=None, help="base artifact the model's adapters apply to (default: --model)")
    ev.add_argument("--data", required=True, help="data artifact holding <split>.jsonl and images/")
    ev.add_argument("--out", required=True, help="output artifact URI (local dir or s3://)")
    ev.add_argument("--round", default="eval", help="round name recorded in metrics.json (base, rft, round1, …)")
    ev.add_argument("--split", default="eval", help="which split file to evaluate (default: eval)")
    ev.add_argument("--limit", type=int, default=0, help="evaluate only the first N rows (0 = all)")
    ev.add_argument("--force", action="store_true", help="re-run even if the output is complete")
    ev.set_defaults(func=cmd_eval)

    sp = sub.add_parser("stage", help="run one stage from input URIs to an output URI (what components call)")
    sp.add_argument("name", help="stage name")
    _add_recipe_args(sp)
    sp.add_argument("--input", action="append", default=[], metavar="NAME=URI", help="a named input artifact")
    sp.add_argument("--output", required=True, help="output artifact URI (local dir or s3://)")
    sp.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="stage option, e.g. --option shard=0/4")
    sp.add_argument("--force", action="store_true", help="re-run even if the output is complete")
    sp.set_defaults(func=cmd_stage)
    cp = sub.add_parser("compare", help="ablations: each run's last round − RFT and − the first run's last round, "
                        "paired bootstrap 95%% CIs (docs/ablations.md)")
    cp.add_argument("runs", nargs="+", metavar="RUN_DIR", help="finished run directories; the first is the reference")
    cp.add_argument("--out", default=None, help="also write ablations.json and ablations.md into this directory")
    cp.set_defaults(func=cmd_compare)
    _add_bench_parser(sub)
    _add_pipeline_parser(sub)
    return p


# Failures a user can fix (bad input, recipe, artifact, store, endpoint, cluster): one line and exit 2.
# Named, not imported, so that a failing command does not import modules it never used (and `srcal
# --help` stays light); subclasses count too (preflight.PreflightError is a RecipeError).
EXPECTED_ERRORS = frozenset({
    "srcal.config.schema.RecipeError",
    "srcal.data.schema.DataError",
    "srcal.errors.StageError",
    "srcal.run.store.StoreError",
    "srcal.kubeflow.steps.PipelineError",
    "srcal.models.loading.ModelArtifactError",
    "srcal.errors.ServeError",
    "srcal.kubeflow.trainjob.TrainJobError",
    "srcal.serve.client.RequestFailed",
    "srcal.scorer.data.RScorerDataError",
    "srcal.models.capabilities.UnsupportedArchitecture",
    "srcal.models.shrunk.npm.TokenizersMissing",
})


def is_expected(e: BaseException) -> bool:
    """True for the errors whose message says what to fix (:data:`EXPECTED_ERRORS` and subclasses)."""
    return any(f"{c.__module__}.{c.__qualname__}" in EXPECTED_ERRORS for c in type(e).__mro__)


def error_line(e: BaseException) -> str:
    """The message on one line: multi-problem messages joined with "; ", a heading ending in ":" with " "."""
    parts = [p.strip() for p in str(e).splitlines() if p.strip()]
    # a heading that ends in ":" introduces the list after it: "…cannot run (run preflight): a; b", not "…:; a"
    text = "".join(p + (" " if p.endswith(":") else "; ") for p in parts).removesuffix("; ").strip()
    return "srcal: error: " + (text or type(e).__name__) + "  (srcal --debug … shows the traceback)"


class _NoExpectedTracebacks(logging.Filter):
    """Drops the traceback from a log record whose exception is an expected error: under ``srcal run``
    Prefect logs each failed task and flow with its traceback before :func:`main` prints the one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and is_expected(record.exc_info[1]):
            record.exc_info, record.exc_text = None, None
        return True


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose or args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not args.debug:
        for name in ("prefect.task_runs", "prefect.flow_runs"):
            logging.getLogger(name).addFilter(_NoExpectedTracebacks())
    from srcal.run.store import quiet_wire_logs

    quiet_wire_logs()  # -v must not print botocore's wire dumps (credentials in request headers)
    try:
        return args.func(args) or 0
    except Exception as e:
        if args.debug or not is_expected(e):
            raise
        print(error_line(e), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
