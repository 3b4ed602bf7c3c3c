"""``eval``: accuracy and rationale metrics of one model on the held-out split."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def eval_op(recipe: str, overrides: str, step: str, accelerator_type: str, gpus: int, model: Input[Model],
            base: Input[Model],
            data: Input[Dataset], evaluation: Output[Dataset], metrics: Output[Metrics]):
    """Run plan step ``step`` (``eval/base``, ``eval/rft``, ``eval/round1``…: the ``eval`` stage); numeric
    metrics also go to the KFP Metrics artifact so the UI shows them and *Compare runs* can plot them."""
    from srcal.kubeflow import steps

    steps.run_step(step, recipe, overrides, {"model": model.path, "base": base.path, "data": data.path},
                   evaluation.path, gpus=gpus, accelerator_type=accelerator_type)
    steps.log_metrics(metrics, evaluation.path, "metrics.json")
