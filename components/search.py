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
def search_op(recipe: str, overrides: str, round_name: str, accelerator_type: str, gpus: int, shard: int,
              shards: int, policy: Input[Model],
              base: Input[Model], data: Input[Dataset], candidates: Output[Dataset]):
    """Run the ``search`` stage on calibration shard ``shard``/``shards`` with round ``round_name``'s policy."""
    from srcal import pipeline

    pipeline.run_stage("search", recipe, overrides, {"policy": policy.path, "base": base.path, "data": data.path},
                       candidates.path, options={"shard": f"{shard}/{shards}", "split": "calib", "round": round_name},
                       gpus=gpus, accelerator_type=accelerator_type)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def search_merge_op(recipe: str, overrides: str, shards: Input[List[Dataset]],  # noqa: UP006
                    candidates: Output[Dataset]):
    """Run ``search-merge`` over the shard outputs collected from the ParallelFor."""
    from srcal import pipeline

    inputs = {f"shard{i}": a.path for i, a in enumerate(shards)}
    pipeline.run_stage("search-merge", recipe, overrides, inputs, candidates.path)
