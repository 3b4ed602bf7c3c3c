"""``curate``: confidence-weighted aggregation of judgments into chosen/rejected preference pairs."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def curate_op(recipe: str, overrides: str, judgments: Input[Dataset], candidates: Input[Dataset],
              data: Input[Dataset], pairs: Output[Dataset]):
    """Run the ``curate`` stage."""
    from srcal.kubeflow import steps

    steps.run_stage("curate", recipe, overrides,
                    {"judgments": judgments.path, "candidates": candidates.path, "data": data.path}, pairs.path)
