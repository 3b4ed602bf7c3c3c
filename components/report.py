"""``report``: the run's report (Markdown + self-contained HTML, rendered by the KFP UI's Visualization
tab) and the export of the run's deliverables to a stable S3 address."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from components import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def report_op(recipe: str, overrides: str, judge: Input[Dataset], eval_base: Input[Dataset],
              eval_rft: Input[Dataset], eval_round1: Input[Dataset], round1_search: Input[Dataset],
              round1_score: Input[Dataset], round1_curate: Input[Dataset], round1_align: Input[Dataset],
              data: Input[Dataset], base: Input[Dataset], rft: Input[Dataset], rscorer_search: Input[Dataset],
              rscorer_data: Input[Dataset], report: Output[Dataset], html: Output[HTML], markdown: Output[Markdown],
              metrics: Output[Metrics],
              eval_round2: Input[Dataset] | None = None, round2_search: Input[Dataset] | None = None,
              round2_score: Input[Dataset] | None = None, round2_curate: Input[Dataset] | None = None,
              round2_align: Input[Dataset] | None = None,
              eval_round3: Input[Dataset] | None = None, round3_search: Input[Dataset] | None = None,
              round3_score: Input[Dataset] | None = None, round3_curate: Input[Dataset] | None = None,
              round3_align: Input[Dataset] | None = None):
    """Run the ``report`` stage on this run's artifacts (named as the plan names them: ``srcal.graph``) and
    copy report.html / report.md into the UI artifacts.

    Models and images are deliberately not inputs (the launcher downloads every input in full): ``judge``
    is the judge's held-out metrics, ``roundK_align``, ``data``, ``base`` and ``rft`` are summary extracts.
    """
    from srcal.kubeflow import steps

    parts = {"judge": judge, "eval_base": eval_base, "eval_rft": eval_rft,
             "eval_round1": eval_round1, "round1_search": round1_search, "round1_score": round1_score,
             "round1_curate": round1_curate, "round1_align": round1_align,
             "eval_round2": eval_round2, "round2_search": round2_search, "round2_score": round2_score,
             "round2_curate": round2_curate, "round2_align": round2_align,
             "eval_round3": eval_round3, "round3_search": round3_search, "round3_score": round3_score,
             "round3_curate": round3_curate, "round3_align": round3_align, "data": data, "base": base, "rft": rft,
             "rscorer_search": rscorer_search, "rscorer_data": rscorer_data}
    parts = {name: art.path for name, art in parts.items() if art is not None}
    steps.run_report(recipe, overrides, parts, report.path, html.path, markdown.path, metrics)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def export_op(s3_prefix: str, run_id: str, report: Input[Dataset], policy: Input[Model], judge_eval: Input[Dataset]):
    """Publish the report, the final policy and the judge's held-out metrics under
    ``<s3_prefix>/<run id>/`` (with completion markers), a stable address for consumers outside KFP
    (model registry, serving, dashboards). Skipped when ``s3_prefix`` is empty."""
    from srcal.kubeflow import steps

    steps.export_run(s3_prefix, run_id, {"report": report.path, "policy": policy.path,
                                         "judge-eval": judge_eval.path})
