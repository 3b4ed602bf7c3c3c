"""Training stages (``rft``, ``align``) beyond one node: a Kubeflow Trainer TrainJob.

What the rft/align components call (:func:`run_training_stage`), two ways to run the *same*
``srcal stage`` command, no home-made launcher:

* one node (``num_nodes == 1``): :func:`srcal.kubeflow.steps.run_stage` in the pod. With
  ``<section>.world_size > 1`` the stage itself re-launches its training under ``torchrun`` across the
  pod's GPUs (DDP, or DeepSpeed ZeRO from ``<section>.deepspeed``): srcal.rft.sft / srcal.align.
* several nodes (``num_nodes > 1``): a Kubeflow Trainer v2 ``TrainJob`` on the ``torch-distributed``
  ClusterTrainingRuntime running ``torchrun -m srcal.cli stage … --set <section>.world_size=1``: the
  runtime's torchrun starts one process per GPU on every node (``PET_NNODES``, ``PET_NODE_RANK``,
  ``PET_MASTER_ADDR`` injected), so each process is one rank of the job and the stage must not launch
  again. The job's pods cannot see this pod's disk, so inputs are their S3 URIs and the job publishes
  to ``<output uri>-trainjob``; the component then copies that finished artifact into its own output.
  Only global rank 0 publishes (``stages.execute`` checks ``RANK``); the GPU pool's nodeSelector and
  tolerations belong in the TrainingRuntime the job references.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid

log = logging.getLogger("srcal.kubeflow.trainjob")

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
SECTIONS = {"rft": "rft", "align": "align"}  # stage -> recipe section holding world_size


class TrainJobError(RuntimeError):
    """A training job that could not be launched or did not complete; the message says why."""


def stage_argv(stage: str, recipe: str, overrides: list[str], inputs: dict[str, str], output: str,
               options: dict[str, str] | None = None) -> list[str]:
    """``srcal stage …`` arguments (after the program) for the given recipe, inputs and output."""
    argv = ["stage", stage, "--recipe", recipe]
    for ov in overrides:
        argv += ["--set", ov]
    for k, v in sorted(inputs.items()):
        argv += ["--input", f"{k}={v}"]
    argv += ["--output", output]
    for k, v in sorted((options or {}).items()):
        argv += ["--option", f"{k}={v}"]
    return argv


def trainjob_name(stage: str) -> str:
    return f"srcal-{stage}-{uuid.uuid4().hex[:8]}"


def trainjob_manifest(name: str, *, image: str, argv: list[str], num_nodes: int, gpus_per_node: int,
                      accelerator_type: str = "nvidia.com/gpu", runtime: str = "torch-distributed",
                      env: dict[str, str] | None = None, secret_env: str | None = None) -> dict:
    """A TrainJob running ``torchrun -m srcal.cli <argv>`` on ``num_nodes`` nodes.

    ``secret_env`` names the S3 secret whose keys become the trainer's environment (same secret as
    the pipeline steps), so the job can read its S3 inputs and publish its output.
    """
    if num_nodes < 2:
        raise TrainJobError(f"num_nodes={num_nodes}: a TrainJob is for 2 or more nodes; run in the pod instead")
    trainer: dict = {
        "image": image,
        "command": ["torchrun", "-m", "srcal.cli", *argv],
        "numNodes": num_nodes,
        "resourcesPerNode": {"limits": {accelerator_type: str(gpus_per_node)},
                             "requests": {accelerator_type: str(gpus_per_node)}},
    }
    env_list = [{"name": k, "value": v} for k, v in sorted((env or {}).items())]
    if secret_env:
        env_list += [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret_env, "key": k}}}
                     for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")]
    if env_list:
        trainer["env"] = env_list
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "srcal"}},
        "spec": {
            "runtimeRef": {"apiGroup": GROUP, "kind": "ClusterTrainingRuntime", "name": runtime},
            "trainer": trainer,
        },
    }


def job_state(obj: dict) -> str | None:
    """``Complete`` or ``Failed`` once the TrainJob has that condition ``True``, else None."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return c["type"]
    return None


def submit_and_wait(manifest: dict, namespace: str, *, timeout_s: float = 48 * 3600, poll_s: float = 30,
                    api=None) -> dict:
    """Create the TrainJob and wait for Complete; Failed or a timeout raises with the job's conditions.
    The job is deleted on timeout or failure so no GPUs stay held by an orphan."""
    if api is None:
        from srcal.kubeflow.kube import custom_objects_api

        api = custom_objects_api()
    name = manifest["metadata"]["name"]
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    log.info("TrainJob %s/%s created; waiting for Complete", namespace, name)
    deadline = time.monotonic() + timeout_s
    while True:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        state = job_state(obj)
        if state == "Complete":
            return obj
        if state == "Failed" or time.monotonic() > deadline:
            conds = (obj.get("status") or {}).get("conditions")
            api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            why = "failed" if state == "Failed" else f"did not complete in {timeout_s:.0f}s"
            raise TrainJobError(f"TrainJob {namespace}/{name} {why}; conditions: {json.dumps(conds)}")
        time.sleep(poll_s)


def run_training_stage(stage: str, recipe: str, overrides: str, inputs: dict, output, *, num_nodes: int = 1,
                       s3_secret: str = "", gpus: int | None = None, accelerator_type: str = "nvidia.com/gpu",
                       options: dict[str, str] | None = None,
                       runtime: str = "torch-distributed", api=None) -> None:
    """Run a training stage for a component; ``inputs`` and ``output`` are KFP artifacts (``.path``/``.uri``)."""
    from srcal.run import store
    from srcal.kubeflow import steps

    if stage not in SECTIONS:
        raise TrainJobError(f"stage {stage!r} is not a training stage; expected one of {sorted(SECTIONS)}")
    section = getattr(steps.load_component_recipe(recipe, overrides), SECTIONS[stage])
    if num_nodes > 1:
        # each torchrun process of the job is one rank: the stage must not launch torchrun again
        ovs = [*steps.parse_overrides(overrides), f"{SECTIONS[stage]}.world_size=1"]
        staging = output.uri.rstrip("/") + "-trainjob"
        uris = {k: a.uri for k, a in inputs.items()}
        if not all(store.is_s3(u) for u in [*uris.values(), staging]):
            raise TrainJobError("a multi-node TrainJob reads its inputs from S3: run with an s3:// pipeline_root")
        image = os.environ.get("SRCAL_IMAGE", "")
        if not image:
            raise TrainJobError("SRCAL_IMAGE is not set in the step: cannot tell the TrainJob which image to run")
        from srcal.kubeflow.kserve import current_namespace

        manifest = trainjob_manifest(
            trainjob_name(stage), image=image, argv=stage_argv(stage, recipe, ovs, uris, staging, options),
            num_nodes=num_nodes, gpus_per_node=gpus or section.world_size, accelerator_type=accelerator_type,
            runtime=runtime, secret_env=s3_secret or None)
        submit_and_wait(manifest, current_namespace(), api=api)
        steps.import_artifact(staging, output.path)
    else:
        steps.run_stage(stage, recipe, overrides, {k: a.path for k, a in inputs.items()}, output.path,
                           options=options, gpus=gpus, accelerator_type=accelerator_type)
