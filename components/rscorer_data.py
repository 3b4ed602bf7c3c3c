"""``rscorer-data``: labelled response pairs (both orders) to train the R-Scorer judge, from the RFT
policy's candidates on RFT-split samples (plan step ``rscorer/search``; ``srcal.graph``)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def rscorer_data_op(recipe: str, overrides: str, data: Input[Dataset], base: Input[Model], rft: Input[Model],
                    candidates: Input[Dataset], rscorer_data: Output[Dataset]):
    """Run the ``rscorer-data`` stage on the RFT policy's candidates (``candidates``)."""
    from srcal.kubeflow import steps

    steps.run_stage("rscorer-data", recipe, overrides, {"data": data.path, "base": base.path, "rft": rft.path,
                                                        "candidates": candidates.path}, rscorer_data.path)
