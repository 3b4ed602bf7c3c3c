"""``rscorer-train``: train the R-Scorer judge; its held-out agreement goes to the Metrics artifact."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def rscorer_train_op(recipe: str, overrides: str, accelerator_type: str, gpus: int, rscorer_data: Input[Dataset],
                     judge: Output[Model],
                     judge_eval: Output[Dataset], metrics: Output[Metrics]):
    """Run the ``rscorer-train`` stage. ``judge_eval`` is a small extract (held-out metrics and
    summary) for the report and the export, so neither downloads the judge weights."""
    from srcal.kubeflow import steps

    steps.run_stage("rscorer-train", recipe, overrides, {"rscorer_data": rscorer_data.path}, judge.path,
                    gpus=gpus, accelerator_type=accelerator_type)
    steps.extract_files(judge.path, judge_eval.path, ["heldout_metrics.json", "summary.json"])
    steps.log_metrics(metrics, judge.path, "heldout_metrics.json")
