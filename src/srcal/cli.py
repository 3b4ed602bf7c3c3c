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


def cmd_run(args) -> int:
    from srcal import flow

    result = flow.run_flow(_recipe(args), args.out, retries=args.retries, force=args.force)
    ran = sum(1 for r in result["steps"] if r["status"] == "ran")
    print(f"srcal run: {ran} of {len(result['steps'])} steps ran, the rest were complete; "
          f"{result['wall_s']:.0f} s. metrics.json, report.md, report.html in:", file=sys.stderr)
    print(result["out"])
    return 0


# ---------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="srcal",
        description="Self-Rationale Calibration for vision-language models: run the method locally, "
        "run one stage as a pipeline component would, benchmark, or compile/submit the Kubeflow pipeline.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    rp = sub.add_parser("recipe", help="inspect recipes")
    rsub = rp.add_subparsers(dest="recipe_command", required=True)
    r1 = rsub.add_parser("show", help="print the resolved recipe (after overrides)")
    _add_recipe_args(r1)
    r1.set_defaults(func=cmd_recipe_show)
    r2 = rsub.add_parser("keys", help="list every recipe key with its default and meaning")
    r2.set_defaults(func=cmd_recipe_keys)

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
    run.set_defaults(func=cmd_run)

    sp = sub.add_parser("stage", help="run one stage from input URIs to an output URI (what components call)")
    sp.add_argument("name", help="stage name")
    _add_recipe_args(sp)
    sp.add_argument("--input", action="append", default=[], metavar="NAME=URI", help="a named input artifact")
    sp.add_argument("--output", required=True, help="output artifact URI (local dir or s3://)")
    sp.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="stage option, e.g. --option shard=0/4")
    sp.add_argument("--force", action="store_true", help="re-run even if the output is complete")
    sp.set_defaults(func=cmd_stage)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from srcal.config import RecipeError
    from srcal.stages import StageError

    try:
        return args.func(args) or 0
    except (RecipeError, StageError) as e:
        print(f"srcal: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
