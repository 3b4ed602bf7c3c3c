"""``rft``: rationale fine-tuning (LoRA SFT on teacher rationale-answer pairs)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def rft_op(recipe: str, overrides: str, accelerator_type: str, gpus: int, num_nodes: int, s3_secret: str,
           base: Input[Model], data: Input[Dataset],
           rft: Output[Model], summary: Output[Dataset]):
    """Run the ``rft`` stage: in this pod (accelerate across its GPUs when ``rft.world_size`` > 1), or
    as a Kubeflow Trainer TrainJob over ``num_nodes`` nodes running the same ``srcal stage`` command.
    ``summary`` is a small extract (summary.json) for the report, so it does not download the adapter."""
    from srcal.kubeflow import steps, trainjob

    trainjob.run_training_stage("rft", recipe, overrides, {"base": base, "data": data}, rft,
                                num_nodes=num_nodes, s3_secret=s3_secret, gpus=gpus,
                                accelerator_type=accelerator_type)
    steps.extract_files(rft.path, summary.path, ["summary.json"])
