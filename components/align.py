"""``align``: DPO with the SFT term on the curated pairs; the round's new policy."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def align_op(recipe: str, overrides: str, step: str, accelerator_type: str, gpus: int, num_nodes: int,
             s3_secret: str, pairs: Input[Dataset],
             policy: Input[Model], base: Input[Model], data: Input[Dataset], aligned: Output[Model],
             summary: Output[Dataset]):
    """Run plan step ``step`` (``round<k>/align``: the ``align`` stage): in this pod (accelerate/DeepSpeed across its GPUs when
    ``align.world_size`` > 1), or as a Kubeflow Trainer TrainJob over ``num_nodes`` nodes. ``summary``
    is a small extract (summary.json) for the report, so it does not download the adapter."""
    from srcal.kubeflow import steps, trainjob

    trainjob.run_training_stage("align", recipe, overrides,
                                {"pairs": pairs, "policy": policy, "base": base, "data": data}, aligned,
                                num_nodes=num_nodes, s3_secret=s3_secret, gpus=gpus,
                                accelerator_type=accelerator_type,
                                options=steps.step_options(step, recipe, overrides)[1])
    steps.extract_files(aligned.path, summary.path, ["summary.json"])
