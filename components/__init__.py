"""KFP v2 components for srcal: one module per stage, each a thin wrapper around ``srcal.stages``.

Every component is ``@dsl.component(base_image=<project image>, install_kfp_package=False)``: the
project and kfp 2.17 are already in the image (``images/Dockerfile.train``), so no pip runs at pod
start. The body imports srcal and calls :func:`srcal.kubeflow.steps.run_stage` with the artifacts' local
``.path`` (the KFP launcher downloads inputs from, and uploads outputs to, the S3 ``pipeline_root``).
No stage logic lives here: it is all in ``srcal``, where ``srcal run`` calls the same functions.

The image references below are what the checked-in YAML names; ``srcal pipeline compile --image-tag``
rewrites them to the tag built by ``images/build.sh`` (the git sha) for a release.
"""

# Registry/repository of the two images built by images/build.sh; the tag is the package version.
REGISTRY = "ghcr.io/srcal"
IMAGE_TAG = "v0.1.0"
TRAIN_IMAGE = f"{REGISTRY}/srcal-train:{IMAGE_TAG}"
VLLM_IMAGE = f"{REGISTRY}/srcal-vllm:{IMAGE_TAG}"
