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
    own, download, source, source_deps, check = plan["commands"]
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
    assert set(download[download.index("--only-binary=:all:") + 1:]) | {"deepspeed>=0.17"} == set(reqs) | set(
        plan["source_only_requirements"])
    assert plan["offline_install"] == ["pip", "install", "--no-index", "--find-links", "wh", "medr1[gpu]"]


def test_make_wheelhouse_runs_the_script():
    out = subprocess.run(["make", "-n", "wheelhouse"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "scripts/wheelhouse.py --dest wheelhouse" in out.stdout


def test_plan_flag_prints_and_downloads_nothing(tmp_path, capsys):
    assert wheelhouse.main(["--plan", "--dest", str(tmp_path / "wh")]) == 0
    assert '"offline_install"' in capsys.readouterr().out
    assert not (tmp_path / "wh").exists()


def _names(reqs):
    return {wheelhouse._name(r) for r in reqs}


def test_plan_covers_the_requirements_of_the_wheels_it_builds():
    """Review A3: `pip wheel --no-deps deepspeed` fetched none of DeepSpeed's requirements, and hjson and
    msgpack are required by nothing else, so the offline install stopped at "No matching distribution found
    for hjson". Each is now downloaded with the binaries, then the built wheels' own metadata is resolved
    for the target, then pip must resolve medr1[gpu] from the wheelhouse alone."""
    plan = wheelhouse.plan("wh", python="py")
    own, download, source, source_deps, check = plan["commands"]
    downloaded = _names(download[download.index("--only-binary=:all:") + 1:])
    # deepspeed 0.19.8's requirements/requirements.txt, every one downloaded for the target
    for name in ("hjson", "msgpack", "ninja", "py-cpuinfo", "einops", "pydantic", "psutil", "numpy", "torch", "tqdm"):
        assert name in downloaded, name
    # what the built wheel's metadata says (the build may add nvidia-ml-py), found via the wheelhouse itself
    assert source_deps[2:4] == ["pip", "download"] and _after(source_deps, "--find-links") == ["wh"]
    assert "--only-binary=:all:" in source_deps and source_deps[-1] == "deepspeed>=0.17"
    # last: an offline resolve against the wheelhouse alone, as the GPU node will do it
    assert check[check.index("install"):][:6] == ["install", "--dry-run", "--ignore-installed", "--no-index",
                                                  "--find-links", "wh"]
    assert "--isolated" in check and _after(check, "--python-version") == ["3.12"] and check[-1] == "medr1[gpu]"


def _wheel(dest, name, requires=()):
    import zipfile

    dist = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(dest / f"{name}-1.0-py3-none-any.whl", "w") as z:
        z.writestr(f"{name}/__init__.py", "")
        z.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"
                   + "".join(f"Requires-Dist: {r}\n" for r in requires))
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}/RECORD", "")


def test_the_check_step_fails_on_a_requirement_missing_from_the_wheelhouse(tmp_path):
    """The plan's last command, run for real by pip on a wheelhouse of two tiny wheels: a built wheel whose
    requirement is absent fails it (the offline node's failure, found on the connected machine), and
    passes once the requirement is there. No network: --no-index, --isolated."""
    _wheel(tmp_path, "fakespeed", requires=["fakehjson"])
    cmd = wheelhouse.check_command(str(tmp_path), sys.executable, "fakespeed")
    missing = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "fakehjson" in missing.stderr
    _wheel(tmp_path, "fakehjson")
    found = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    assert "Would install fakehjson-1.0 fakespeed-1.0" in found.stdout
    assert not (tmp_path / ".resolve-check").exists()  # a dry run writes nothing


def test_the_gpu_extra_caps_vllm_within_trls_supported_range():
    """TRL 1.15 (the gpu extra's) supports vLLM 0.21-0.31 (its METADATA, and a warning outside it in
    trl/import_utils.py); uncapped, pip took vLLM 0.33 and with it torch 2.14. TRL 1.16 (the CPU stack's)
    states the same upper bound, read here from its installed metadata."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    vllm = next(Requirement(r) for r in wheelhouse.requirements() if wheelhouse._name(r) == "vllm")
    assert "0.31.0" in vllm.specifier and "0.21.0" in vllm.specifier
    assert "0.32.0" not in vllm.specifier and "0.33.0" not in vllm.specifier
    trl_vllm = next(Requirement(r) for r in requires("trl") if r.startswith("vllm"))
    assert "0.31.0" in trl_vllm.specifier and "0.31.1" not in trl_vllm.specifier
