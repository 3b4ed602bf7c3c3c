"""The CLI starts fast and imports no heavy dependency (DESIGN §2: lazy imports)."""

import subprocess
import sys
import time

HEAVY = ("torch", "transformers", "trl", "peft", "kfp", "prefect", "vllm", "deepspeed", "boto3")


def test_help_is_fast_and_light():
    code = (
        "import sys, srcal.cli\n"
        "try:\n    srcal.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    elapsed = time.time() - t0
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
    assert elapsed < 2.0, f"srcal --help took {elapsed:.2f}s"


def test_bad_override_exits_2_with_the_key(capsys):
    from srcal.cli import main

    assert main(["recipe", "show", "--set", "align.bta=1"]) == 2
    assert "align.bta: unknown key" in capsys.readouterr().err
