"""``search``: sentence-level beam search over one data shard, the shard list, and the merge."""

from typing import List  # noqa: UP035 - KFP parses typing.List in component signatures

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components import TRAIN_IMAGE, VLLM_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def shard_indexes_op(shards: int) -> List[int]:  # noqa: UP006
    """``[0, …, shards-1]``: the items of the ParallelFor (KFP cannot loop over a count directly)."""
    if shards < 1:
        raise ValueError(f"shards={shards}: need at least 1")
    return list(range(shards))


@dsl.component(base_image=VLLM_IMAGE, install_kfp_package=False)
def search_op(recipe: str, overrides: str, step: str, accelerator_type: str, gpus: int, shard: int,
              shards: int, policy: Input[Model],
              base: Input[Model], data: Input[Dataset], candidates: Output[Dataset]):
    """Run shard ``shard``/``shards`` of plan step ``step`` (``round<k>/search``: calibration split, round
    k's policy; ``rscorer/search``: the rft split, one shard) with the options the plan gives it."""
    from srcal.kubeflow import steps

    steps.run_step(step, recipe, overrides, {"policy": policy.path, "base": base.path, "data": data.path},
                   candidates.path, shard=f"{shard}/{shards}", gpus=gpus, accelerator_type=accelerator_type)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def search_merge_op(recipe: str, overrides: str, step: str, shards: Input[List[Dataset]],  # noqa: UP006
                    candidates: Output[Dataset]):
    """Run ``search-merge`` for plan step ``step`` over the shard outputs collected from the ParallelFor."""
    from srcal.kubeflow import steps

    inputs = {f"shard{i}": a.path for i, a in enumerate(shards)}
    steps.run_step(step, recipe, overrides, inputs, candidates.path)
