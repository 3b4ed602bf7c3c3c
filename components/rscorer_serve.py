"""``rscorer-serve`` / ``rscorer-teardown``: the judge as a KServe InferenceService for the rounds.

``judge_serving="kserve"`` creates an InferenceService (vLLM runtime, OpenAI-compatible) from the judge
artifact's S3 URI, waits for Ready and returns its URL; the teardown (the pipeline's exit handler)
deletes it whether the rounds succeeded or not. ``judge_serving="in-step"`` (kfp.local, single-node or
no-KServe clusters) returns an empty URL: each score step then runs the judge itself from the artifact.
"""

from kfp import dsl
from kfp.dsl import Input, Model

from components import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def rscorer_serve_op(judge_serving: str, run_id: str, judge: Input[Model], runtime: str, service_account: str,
                     accelerator_type: str, gpus: int, node_selector: dict, tolerations: list,
                     ready_timeout_s: int) -> str:
    """Create the judge endpoint (or nothing, in-step mode) and return its OpenAI base URL."""
    from srcal.kubeflow import kserve

    return kserve.serve_judge(judge_serving, kserve.isvc_name(run_id), judge.uri, runtime=runtime,
                              service_account=service_account, accelerator_type=accelerator_type, gpus=gpus,
                              node_selector=node_selector, tolerations=tolerations,
                              ready_timeout_s=ready_timeout_s)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def rscorer_teardown_op(judge_serving: str, run_id: str, status: dsl.PipelineTaskFinalStatus):
    """Delete the judge InferenceService of this run (exit handler: runs even when a round failed)."""
    from srcal.kubeflow import kserve

    print(f"pipeline finished with state {status.state}; tearing down the judge endpoint ({judge_serving})")
    kserve.teardown_judge(judge_serving, kserve.isvc_name(run_id))
