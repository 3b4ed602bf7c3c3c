"""``report``: the run's report (Markdown + self-contained HTML, rendered by the KFP UI's Visualization
tab) and the export of the run's deliverables to a stable S3 address."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Model, Output

from components import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def report_op(recipe: str, overrides: str, data: Input[Dataset], judge_eval: Input[Dataset],
              eval_base: Input[Dataset], eval_rft: Input[Dataset],
              eval_round1: Input[Dataset], candidates_round1: Input[Dataset], judgments_round1: Input[Dataset],
              pairs_round1: Input[Dataset],
              report: Output[Dataset], html: Output[HTML], markdown: Output[Markdown],
              eval_round2: Input[Dataset] | None = None, candidates_round2: Input[Dataset] | None = None,
              judgments_round2: Input[Dataset] | None = None, pairs_round2: Input[Dataset] | None = None,
              eval_round3: Input[Dataset] | None = None, candidates_round3: Input[Dataset] | None = None,
              judgments_round3: Input[Dataset] | None = None, pairs_round3: Input[Dataset] | None = None):
    """Lay this run's small artifacts out as the run directory ``srcal run`` writes, run the ``report``
    stage on it, and copy report.html / report.md into the UI artifacts.

    Policies and the judge model are deliberately not inputs: the launcher downloads every input in
    full, and the report needs only metrics, candidates, judgments and pairs.
    """
    from srcal import pipeline

    parts = {name: art.path for name, art in locals().items()
             if name not in ("recipe", "overrides", "report", "html", "markdown") and art is not None}
    pipeline.run_report(recipe, overrides, parts, report.path, html.path, markdown.path)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def export_op(s3_prefix: str, run_id: str, report: Input[Dataset], policy: Input[Model], judge_eval: Input[Dataset]):
    """Publish the report, the final policy and the judge's held-out metrics under
    ``<s3_prefix>/<run id>/`` (with completion markers), a stable address for consumers outside KFP
    (model registry, serving, dashboards). Skipped when ``s3_prefix`` is empty."""
    from srcal import pipeline

    pipeline.export_run(s3_prefix, run_id, {"report": report.path, "policy": policy.path,
                                            "judge-eval": judge_eval.path})
