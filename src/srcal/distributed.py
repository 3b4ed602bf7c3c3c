"""Multi-process training for one node: relaunch a stage's training under torchrun.

RFT and align both scale across a pod's GPUs the same way (DESIGN §5: no home-made launcher): the stage
writes a job file (recipe + input paths + output dir) into its scratch directory, starts
``python -m torch.distributed.run --nproc_per_node=N -m <module> <job>``, and each worker rebuilds the
recipe from the job file and trains (DDP, or DeepSpeed ZeRO when the recipe names a config). Rank 0 writes
``_train_summary.json``, which the launching stage returns. Multi-node runs go through a Kubeflow Trainer
job instead (``srcal.trainjob``), which runs the same stage command on every node.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("srcal.distributed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_torchrun(module: str, recipe, inputs: dict[str, Path], out: Path, world_size: int, *,
                    on_cpu: bool, stage: str) -> dict[str, Any]:
    """Run ``module``'s ``_dist_main`` under torchrun with ``world_size`` processes; return rank 0's summary.

    Raises ``StageError`` naming the exit code when any worker fails (their logs precede it).
    """
    from srcal.stages import StageError

    job = out / "_dist_job.json"
    job.write_text(json.dumps({"recipe": recipe.to_dict(), "inputs": {k: str(v) for k, v in inputs.items()},
                               "out": str(out)}))
    env = dict(os.environ)
    if on_cpu:
        env.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed's CPU accelerator + gloo (notes §0.5)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world_size}",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", module, str(job)]
    log.info("%s: launching %s", stage, " ".join(cmd))
    proc = subprocess.run(cmd, env=env, check=False)
    if proc.returncode != 0:
        raise StageError(f"{stage}: distributed training failed (exit {proc.returncode}); see the log above")
    return json.loads((out / "_train_summary.json").read_text())


def read_job(job_file: str):
    """Inside a worker: the (recipe, inputs, out) the launching stage wrote."""
    from srcal.config import recipe_from_dict

    job = json.loads(Path(job_file).read_text())
    return recipe_from_dict(job["recipe"]), {k: Path(v) for k, v in job["inputs"].items()}, Path(job["out"])


def write_summary_on_rank0(out: Path, summary: dict[str, Any]) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        (out / "_train_summary.json").write_text(json.dumps(summary))
