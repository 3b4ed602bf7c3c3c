"""What RFT and align share about training processes: torchrun on one node, and resuming from checkpoints.

Both stages scale across a pod's GPUs the same way (torchrun, not a home-made launcher: it is what
DeepSpeed and TRL expect): the stage writes a job file (recipe + input paths + output dir + the training
function as ``"module:function"``) into its scratch directory and starts
``python -m torch.distributed.run --nproc_per_node=N -m srcal.run.distributed <job>``; each worker (:func:`main`)
rebuilds the recipe and calls the function (DDP, or DeepSpeed ZeRO when the recipe names a config). Rank 0
writes ``_train_summary.json``, which the launching stage returns. Multi-node runs go through a Kubeflow
Trainer job instead (``srcal.kubeflow.trainjob``), which runs the same stage command on every node.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("srcal.run.distributed")


def free_port() -> int:
    """A TCP port free on the loopback interface now (the OS picks it; a race with another process that
    binds it first is possible but harmless here: torchrun or the server then fails loudly)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def last_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete ``checkpoint-N`` under ``ckpt_dir`` (trainer_state.json is written last), if any."""
    if not ckpt_dir.is_dir():
        return None
    done = [p for p in ckpt_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def launch_torchrun(train: str, recipe, inputs: dict[str, Path], out: Path, world_size: int, *,
                    stage: str) -> dict[str, Any]:
    """Run ``train`` (``"module:function"``, called as ``fn(recipe, inputs, out) -> summary`` in every worker)
    under torchrun with ``world_size`` processes; return rank 0's summary.

    Raises ``StageError`` naming the exit code when any worker fails (their logs precede it).
    """
    from srcal.errors import StageError
    from srcal.models.loading import pick_device

    job = out / "_dist_job.json"
    job.write_text(json.dumps({"recipe": recipe.to_dict(), "inputs": {k: str(v) for k, v in inputs.items()},
                               "out": str(out), "train": train}))
    env = dict(os.environ)
    if pick_device(recipe.device) == "cpu":
        # DeepSpeed's CPU accelerator + gloo: without it DeepSpeed looks for CUDA and fails to start
        env.setdefault("DS_ACCELERATOR", "cpu")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world_size}",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "srcal.run.distributed", str(job)]
    log.info("%s: launching %s", stage, " ".join(cmd))
    proc = subprocess.run(cmd, env=env, check=False)
    if proc.returncode != 0:
        raise StageError(f"{stage}: distributed training failed (exit {proc.returncode}); see the log above")
    return json.loads((out / "_train_summary.json").read_text())


def read_job(job_file: str) -> tuple[Any, dict[str, Path], Path, Callable[..., dict[str, Any]]]:
    """Inside a worker: the (recipe, inputs, out, training function) the launching stage wrote."""
    import importlib

    from srcal.config import recipe_from_dict

    job = json.loads(Path(job_file).read_text())
    module, fn = job["train"].split(":")
    train = getattr(importlib.import_module(module), fn)
    return recipe_from_dict(job["recipe"]), {k: Path(v) for k, v in job["inputs"].items()}, Path(job["out"]), train


def write_summary_on_rank0(out: Path, summary: dict[str, Any]) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        (out / "_train_summary.json").write_text(json.dumps(summary))


def main(job_file: str) -> None:
    """Entry point of each torchrun worker: rebuild the job, train, rank 0 writes the summary."""
    recipe, inputs, out, train = read_job(job_file)
    write_summary_on_rank0(out, train(recipe, inputs, out))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(sys.argv[1])
