"""``score``: pairwise R-Scorer judgments of the merged candidates (both orders)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components import VLLM_IMAGE


@dsl.component(base_image=VLLM_IMAGE, install_kfp_package=False)
def score_op(recipe: str, overrides: str, judge_serving: str, judge_url: str, accelerator_type: str, gpus: int,
             candidates: Input[Dataset], judge: Input[Model], data: Input[Dataset], judgments: Output[Dataset]):
    """Run the ``score`` stage against the KServe judge at ``judge_url``, or, in-step, with the judge
    loaded in this step (``in-step``) or served by a vLLM process in this step (``in-step-vllm``).
    Runs in the vLLM image, which holds all three: the HTTP client, transformers and vLLM."""
    from srcal.kubeflow import steps

    steps.run_score_step(recipe, overrides, judge_serving, judge_url,
                         {"candidates": candidates.path, "judge": judge.path, "data": data.path}, judgments.path,
                         gpus=gpus, accelerator_type=accelerator_type)
