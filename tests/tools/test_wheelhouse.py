"""Tests for `make wheelhouse` (scripts/wheelhouse.py): the plan of commands, never a download."""

from __future__ import annotations

import subprocess
import sys

from medr1.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import wheelhouse  # noqa: E402


def _after(cmd, flag):
    return [cmd[i + 1] for i, x in enumerate(cmd) if x == flag]


def test_plan_downloads_every_gpu_requirement_for_the_target():
    plan = wheelhouse.plan("wh", python="py")
    own, download, source = plan["commands"]
    assert own == ["py", "-m", "pip", "wheel", "--no-deps", "--wheel-dir", "wh", str(REPO_ROOT)]
    # the target, not this machine: CPython 3.12 manylinux x86_64 binary wheels only
    assert _after(download, "--python-version") == ["3.12"] and _after(download, "--abi") == ["cp312"]
    assert "--only-binary=:all:" in download and "manylinux_2_28_x86_64" in _after(download, "--platform")
    assert _after(download, "--dest") == ["wh"]
    # every requirement of the base package and of the gpu extra, the extra's pin winning
    reqs = plan["requirements"]
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "unsloth==2026.10.9",
                 "unsloth-zoo", "vllm", "bitsandbytes", "deepspeed", "papermill"):
        assert any(r.startswith(name) for r in reqs), name
    assert [r for r in reqs if r.startswith("trl")] == ["trl>=1.15,<1.16"]
    assert [r for r in reqs if r.startswith("transformers")] == ["transformers>=5.17,<=5.17.99"]
    # DeepSpeed has no wheel on PyPI: built, not downloaded
    assert plan["source_only"] == ["deepspeed>=0.17"]
    assert source[-1] == "deepspeed>=0.17" and not any(a.startswith("deepspeed") for a in download)
    assert set(download[download.index("--only-binary=:all:") + 1:]) | {"deepspeed>=0.17"} == set(reqs)
    assert plan["offline_install"] == ["pip", "install", "--no-index", "--find-links", "wh", "medr1[gpu]"]


def test_make_wheelhouse_runs_the_script():
    out = subprocess.run(["make", "-n", "wheelhouse"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "scripts/wheelhouse.py --dest wheelhouse" in out.stdout


def test_plan_flag_prints_and_downloads_nothing(tmp_path, capsys):
    assert wheelhouse.main(["--plan", "--dest", str(tmp_path / "wh")]) == 0
    assert '"offline_install"' in capsys.readouterr().out
    assert not (tmp_path / "wh").exists()
