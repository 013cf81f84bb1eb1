"""`make wheelhouse`: on a connected machine, a directory of wheels that installs medr1 with the `gpu` extra
on an offline GPU node (Python 3.12, Linux x86_64, manylinux):

    pip install --no-index --find-links wheelhouse/ 'medr1[gpu]'

Hospital and cluster GPU nodes often have no internet. The wheels are downloaded for the *target*
(`--python-version 3.12 --platform manylinux... --only-binary=:all:`), not for the machine running this, so
the connected machine may be any OS with Python >= 3.9 and pip. Three steps:

1. medr1's own wheel (`pip wheel --no-deps .`).
2. Every requirement of the base package and the `gpu` extra (read from pyproject.toml), as binary wheels
   for the target. Large ones: torch (~0.9 GB, CUDA build) and the nvidia-* CUDA libraries it pulls in
   (~3 GB together), vLLM (~0.4 GB), bitsandbytes (one wheel carrying kernels for several CUDA versions),
   xformers/triton; expect ~6-8 GB in all.
3. Packages published only as source (`SOURCE_ONLY`: DeepSpeed, whose CUDA ops are built just in time on
   the GPU node) are built into wheels here; that step needs a Linux x86_64 machine with Python 3.12 and
   torch installed (DeepSpeed's setup imports torch), or run it on the GPU node's image before it goes
   offline. `pip wheel --no-deps` builds them without their own requirements, and some of those (DeepSpeed's
   `hjson`, `msgpack`) are required by nothing else: they are downloaded with step 2 (`SOURCE_ONLY`
   lists them), and once more from the built wheels' own metadata (the build may add one: DeepSpeed adds
   `nvidia-ml-py` where torch sees CUDA).
4. A check: pip resolves `medr1[gpu]` for the target from the wheelhouse alone (`--no-index --dry-run`),
   which fails, naming it, on any requirement of any wheel in it that is not there.

`--plan` prints the commands as JSON without running them (tests check the plan; nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON_VERSION = "3.12"
# Oldest first: pip accepts a wheel tagged with any of them (torch and vLLM use manylinux_2_28, older
# packages manylinux2014 / _2_17); `any` admits pure-Python wheels.
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64")
# Published on PyPI as source distributions only: built into wheels in step 3. Each with its runtime
# requirements (deepspeed 0.19.8: requirements/requirements.txt, plus nvidia-ml-py that its setup.py adds when
# torch sees CUDA), downloaded as binaries in step 2 because `pip wheel --no-deps` does not fetch them.
SOURCE_ONLY = {"deepspeed": ("einops", "hjson", "msgpack", "ninja", "numpy", "packaging>=20.0", "psutil",
                             "py-cpuinfo", "pydantic>=2.0.0", "torch>=2.0.0", "tqdm", "nvidia-ml-py")}


def requirements(extras: tuple[str, ...] = ("gpu",)) -> list[str]:
    """The base dependencies plus the named extras, from pyproject.toml; an extra's pin wins over the base
    range of the same package (the gpu extra pins the stack Unsloth needs)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs: dict[str, str] = {}
    for req in [*project["dependencies"], *(r for e in extras for r in project["optional-dependencies"][e])]:
        reqs[_name(req)] = req
    return list(reqs.values())


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req, maxsplit=1)[0].lower().replace("_", "-")


def target_args() -> list[str]:
    """pip options that select wheels for the offline node (CPython 3.12, manylinux x86_64), not for this machine."""
    return ["--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", f"cp{PYTHON_VERSION.replace('.', '')}",
            *[a for p in (*PLATFORMS, "any") for a in ("--platform", p)], "--only-binary=:all:"]


def check_command(dest: str, python: str, requirement: str) -> list[str]:
    """pip resolving `requirement` for the target from `dest` alone: fails on anything missing there.
    `--isolated`: a find-links or index in this machine's pip configuration must not fill a gap."""
    return [python, "-m", "pip", "--isolated", "--disable-pip-version-check", "install", "--dry-run", "--ignore-installed", "--no-index", "--find-links", dest,
            "--target", str(Path(dest) / ".resolve-check"), *target_args(), requirement]


def plan(dest: str = "wheelhouse", python: str = sys.executable, extras: tuple[str, ...] = ("gpu",)) -> dict:
    """The commands `make wheelhouse` runs, and the one the offline node runs."""
    reqs = requirements(extras)
    source = [r for r in reqs if _name(r) in SOURCE_ONLY]
    binary = [r for r in reqs if _name(r) not in SOURCE_ONLY]
    # The source-only packages' own requirements, unless a requirement above already names the package.
    named = {_name(r) for r in binary}
    source_deps = list(dict.fromkeys(d for r in source for d in SOURCE_ONLY[_name(r)] if _name(d) not in named))
    commands = [
        [python, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", dest, str(REPO)],
        [python, "-m", "pip", "download", "--dest", dest, *target_args(), *binary, *source_deps],
    ]
    if source:
        commands += [
            [python, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", dest, *source],
            # The built wheels' requirements as their metadata states them, for the target (the wheels
            # themselves are found in dest: PyPI has no binary of them).
            [python, "-m", "pip", "download", "--dest", dest, "--find-links", dest, *target_args(), *source],
        ]
    extra = ",".join(extras)
    commands.append(check_command(dest, python, f"medr1[{extra}]"))
    return {"dest": dest, "python_version": PYTHON_VERSION, "platforms": list(PLATFORMS), "requirements": reqs,
            "source_only": source, "source_only_requirements": source_deps, "commands": commands,
            "offline_install": ["pip", "install", "--no-index", "--find-links", dest, f"medr1[{extra}]"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", default="wheelhouse")
    parser.add_argument("--extras", default="gpu", help="comma-separated extras to include (default: gpu)")
    parser.add_argument("--plan", action="store_true", help="print the commands as JSON; download nothing")
    args = parser.parse_args(argv)
    p = plan(args.dest, extras=tuple(e for e in args.extras.split(",") if e))
    if args.plan:
        print(json.dumps(p, indent=1))
        return 0
    Path(args.dest).mkdir(parents=True, exist_ok=True)
    for cmd in p["commands"]:
        print("+ " + " ".join(cmd), flush=True)
        if subprocess.run(cmd).returncode != 0:
            print(f"wheelhouse: failed: {' '.join(cmd)}", file=sys.stderr)
            return 1
    print(f"done: copy {args.dest}/ to the GPU node and run: {' '.join(p['offline_install'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
