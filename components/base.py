"""``base``: the base LVLM (tiny: trained from scratch; real recipes: a pointer to the hub/S3 model)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def base_op(recipe: str, overrides: str, accelerator_type: str, gpus: int, base_model_uri: str,
            data: Input[Dataset], base: Output[Model], summary: Output[Dataset]):
    """Run the ``base`` stage; a non-empty ``base_model_uri`` overrides the recipe's ``model.base``.
    ``summary`` is a small extract (summary.json) for the report."""
    from srcal.kubeflow import steps

    extra = [f"model.base={base_model_uri}"] if base_model_uri else []
    steps.run_stage("base", recipe, overrides, {"data": data.path}, base.path, extra_overrides=extra,
                    gpus=gpus, accelerator_type=accelerator_type)
    steps.extract_files(base.path, summary.path, ["summary.json"])
