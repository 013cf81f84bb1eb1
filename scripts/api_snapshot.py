#!/usr/bin/env python3
"""Write tests/contracts/api_snapshot.json: the signatures of every library callable medr1's GPU path calls,
read from the pinned wheels' source without importing them.

Why: vLLM and Unsloth import only with a CUDA GPU, and the GPU pins (TRL 1.15, transformers 5.17) differ
from the CPU stack's, so CI cannot import what the GPU path calls. A keyword a library rejects
(`use_cache` reaching vLLM's `SamplingParams`, review A1) then fails only after the model has loaded on a
GPU. This script downloads the pinned wheels (`pip download --no-deps`), parses their source with `ast`
and records, per callable, the parameters (functions) or fields (dataclasses, msgspec Structs);
tests/test_contracts.py checks every keyword medr1 builds against it, and the test fakes of vLLM and
Unsloth validate their calls against it (tests/api_contract.py).

Regenerate whenever a GPU pin moves (tests/test_contracts.py fails when the recorded versions fall outside
pyproject's `gpu` extra):

    python3 scripts/api_snapshot.py                 # downloads the wheels (vLLM: ~320 MB) to a temp dir
    python3 scripts/api_snapshot.py --wheel-dir DIR  # reuse wheels already downloaded there

Only the Python standard library is used, plus pip to download.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "contracts" / "api_snapshot.json"

# The versions `pip install -e '.[gpu,dev]'` resolves on Python 3.12 (review gpu-path-2026-12-07, section 0,
# with vLLM capped at TRL 1.15's supported maximum). accelerate is not pinned by us: it is what TRL 1.15
# and the rest resolve to. Change a version here and rerun when a pin moves.
VERSIONS = {
    "trl": "1.15.0",
    "transformers": "5.17.0",
    "vllm": "0.31.0",
    "unsloth": "2026.10.9",
    "unsloth_zoo": "2026.10.9",
    "accelerate": "1.16.0",
}

# What to record. kind "function": file + qualified name of a def; "fields": the init fields of a dataclass
# or msgspec Struct, the subclass first and its bases after (a dataclass's fields are the union).
# "via" says why a public name is read from another place (the public method only forwards *args/**kwargs).
TARGETS: dict[str, dict] = {
    # vLLM: what medr1.generation.vllm and TRL's colocate path construct.
    "vllm.LLM": {"kind": "function", "file": "vllm/entrypoints/llm.py", "qualname": "LLM.__init__",
                 "kwargs_into": "vllm.EngineArgs",
                 "via": "LLM(**kwargs) passes unknown keywords to EngineArgs(...)"},
    "vllm.EngineArgs": {"kind": "fields", "chain": [("vllm/engine/arg_utils.py", "EngineArgs")]},
    "vllm.LLM.generate": {"kind": "function", "file": "vllm/entrypoints/llm.py", "qualname": "LLM.generate"},
    "vllm.SamplingParams": {"kind": "fields", "chain": [("vllm/sampling_params.py", "SamplingParams")]},
    "vllm.LoRARequest": {"kind": "fields", "chain": [("vllm/lora/request.py", "LoRARequest")]},
    # TRL 1.15 (the GPU pin): the config dataclass (with transformers 5.17's TrainingArguments) and trainer.
    "trl.GRPOConfig": {"kind": "fields", "chain": [("trl/trainer/grpo_config.py", "GRPOConfig"),
                                                   ("trl/trainer/base_config.py", "_BaseConfig"),
                                                   ("transformers/training_args.py", "TrainingArguments")]},
    "trl.GRPOTrainer": {"kind": "function", "file": "trl/trainer/grpo_trainer.py", "qualname": "GRPOTrainer.__init__"},
    # Unsloth 2026.10.9.
    "unsloth.FastLanguageModel.from_pretrained": {
        "kind": "function", "file": "unsloth/models/loader.py", "qualname": "FastLanguageModel.from_pretrained"},
    "unsloth.FastLanguageModel.get_peft_model": {
        "kind": "function", "file": "unsloth/models/llama.py", "qualname": "FastLlamaModel.get_peft_model",
        "via": "FastLanguageModel.get_peft_model(model, *args, **kwargs) forwards to FastLlamaModel.get_peft_model"},
    "unsloth.FastVisionModel.from_pretrained": {
        "kind": "function", "file": "unsloth/models/loader.py", "qualname": "FastModel.from_pretrained",
        "via": "FastVisionModel subclasses FastModel without overriding from_pretrained"},
    "unsloth.FastVisionModel.get_peft_model": {
        "kind": "function", "file": "unsloth/models/vision.py", "qualname": "FastBaseModel.get_peft_model",
        "via": "FastVisionModel -> FastModel.get_peft_model(model, *args, **kwargs) forwards to "
               "FastBaseModel.get_peft_model"},
    # accelerate: the config file's keys and the `accelerate launch` command line.
    "accelerate.ClusterConfig": {"kind": "fields", "chain": [("accelerate/commands/config/config_args.py",
                                                              "ClusterConfig"),
                                                             ("accelerate/commands/config/config_args.py",
                                                              "BaseConfig")]},
    "accelerate.launch": {"kind": "argparse", "file": "accelerate/commands/launch.py",
                          "qualname": "launch_command_parser"},
}


# --------------------------------------------------------------------------------------------------
# Source access
# --------------------------------------------------------------------------------------------------


def download(wheel_dir: Path) -> None:
    """`pip download --no-deps` each pinned wheel into `wheel_dir` (skipped when it is already there)."""
    for name, version in VERSIONS.items():
        if _find_wheel(wheel_dir, name, version) is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                            "-d", str(wheel_dir), f"{name}=={version}"], check=True)


def _find_wheel(wheel_dir: Path, name: str, version: str) -> Path | None:
    hits = sorted(wheel_dir.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    return hits[0] if hits else None


class Sources:
    """Python files and metadata of the downloaded wheels, read from the zip files (nothing is installed)."""

    def __init__(self, wheel_dir: Path):
        self.paths = {name: _find_wheel(wheel_dir, name, version) or _missing(wheel_dir, name, version)
                      for name, version in VERSIONS.items()}
        self.zips = {name: zipfile.ZipFile(path) for name, path in self.paths.items()}
        self._trees: dict[str, ast.Module] = {}

    def _zip_for(self, path: str) -> zipfile.ZipFile:
        top = path.split("/")[0]
        return self.zips[top]

    def text(self, path: str) -> str:
        return self._zip_for(path).read(path).decode("utf-8")

    def tree(self, path: str) -> ast.Module:
        if path not in self._trees:
            self._trees[path] = ast.parse(self.text(path), filename=path)
        return self._trees[path]

    def metadata(self, name: str) -> str:
        z = self.zips[name]
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return z.read(meta).decode("utf-8")


def _missing(wheel_dir: Path, name: str, version: str):
    raise SystemExit(f"api_snapshot.py: no wheel of {name}=={version} in {wheel_dir}")


def _find_def(tree: ast.Module, qualname: str) -> ast.AST:
    node: ast.AST = tree
    for part in qualname.split("."):
        body = getattr(node, "body", [])
        found = next((n for n in body if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                      and n.name == part), None)
        if found is None:
            raise SystemExit(f"api_snapshot.py: {qualname} not found (at {part!r})")
        node = found
    return node


# --------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------


def function_signature(fn: ast.FunctionDef, *, drop_self: bool) -> dict:
    """Parameter names by kind: positional (in order), keyword-only, which have no default, *args, **kwargs."""
    a = fn.args
    positional = [p.arg for p in a.posonlyargs + a.args]
    defaults = len(a.defaults)
    required = positional[:len(positional) - defaults] if defaults else list(positional)
    required += [p.arg for p, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is None]
    posonly = [p.arg for p in a.posonlyargs]
    if drop_self and positional and positional[0] in ("self", "cls"):
        positional, required = positional[1:], [r for r in required if r != positional[0]]
        posonly = [p for p in posonly if p not in ("self", "cls")]
    return {"positional": positional, "positional_only": posonly, "keyword_only": [p.arg for p in a.kwonlyargs],
            "required": required, "varargs": a.vararg is not None, "varkw": a.kwarg is not None,
            "line": fn.lineno}


def _is_staticmethod(fn: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)


def class_fields(cls: ast.ClassDef) -> list[dict]:
    """Init fields of a dataclass or msgspec Struct body: annotated names, minus ClassVar and init=False."""
    out = []
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        ann = ast.unparse(node.annotation)
        if ann.startswith(("ClassVar", "typing.ClassVar")):
            continue
        value = node.value
        if isinstance(value, ast.Call) and ast.unparse(value.func).split(".")[-1] == "field":
            kw = {k.arg: k.value for k in value.keywords}
            if isinstance(kw.get("init"), ast.Constant) and kw["init"].value is False:
                continue
            has_default = "default" in kw or "default_factory" in kw
        else:
            has_default = value is not None
        out.append({"name": node.target.id, "required": not has_default, "line": node.lineno})
    return out


def fields_of_chain(src: Sources, chain: list[tuple[str, str]]) -> dict:
    """Fields of a class and its listed bases, in dataclass order (base fields first, overrides in place)."""
    ordered: dict[str, dict] = {}
    where = []
    for path, name in reversed(chain):
        cls = _find_def(src.tree(path), name)
        where.append(f"{path}:{cls.lineno}")
        for f in class_fields(cls):
            ordered[f["name"]] = {**f, "file": path} if f["name"] not in ordered else {
                **ordered[f["name"]], "required": f["required"]}
    fields = list(ordered.values())
    return {"fields": [f["name"] for f in fields], "required": [f["name"] for f in fields if f["required"]],
            "source": list(reversed(where))}


def argparse_options(fn: ast.FunctionDef) -> dict:
    """Option strings and destinations of every `add_argument` call in a parser-building function."""
    options, dests = [], set()
    for node in ast.walk(fn):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"):
            continue
        flags = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        dest = next((k.value.value for k in node.keywords if k.arg == "dest" and isinstance(k.value, ast.Constant)),
                    None)
        longs = [f for f in flags if f.startswith("--")]
        if dest is None and flags:
            dest = (longs[0] if longs else flags[0]).lstrip("-").replace("-", "_")
        options += [f for f in flags if f.startswith("-")]
        if dest:
            dests.add(dest)
    return {"options": sorted(set(options)), "dests": sorted(dests), "line": fn.lineno}


def call_keywords(tree: ast.Module, func_name: str) -> list[str]:
    """Keyword names of every call to `func_name(...)` in a module (sorted union)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] == func_name:
            names.update(k.arg for k in node.keywords if k.arg)
    return sorted(names)


def dict_literal_keys(tree: ast.Module, variable: str) -> list[str]:
    """Keys of every `variable = {...}` dict literal in a module (sorted union)."""
    keys: set[str] = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and any(isinstance(t, ast.Name) and t.id == variable for t in node.targets)):
            keys.update(k.value for k in node.value.keys if isinstance(k, ast.Constant))
    return sorted(keys)


def literal_values(tree: ast.Module, name: str) -> list:
    """The members of `name = Literal[...]` at module level."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            sub = node.value
            if isinstance(sub, ast.Subscript):
                elts = sub.slice.elts if isinstance(sub.slice, ast.Tuple) else [sub.slice]
                return [e.value for e in elts if isinstance(e, ast.Constant)]
    raise SystemExit(f"api_snapshot.py: {name} = Literal[...] not found")


def requirement_of(metadata: str, package: str, extra: str) -> str | None:
    """The version specifier a wheel's METADATA gives `package` under `extra` (e.g. TRL's vLLM range)."""
    for line in metadata.splitlines():
        m = re.match(rf"Requires-Dist: {re.escape(package)}\s*([^;]*);\s*extra\s*==\s*['\"]{extra}['\"]", line)
        if m:
            return m.group(1).strip()
    return None


def snapshot(src: Sources) -> dict:
    callables: dict[str, dict] = {}
    for name, spec in TARGETS.items():
        if spec["kind"] == "fields":
            entry = fields_of_chain(src, spec["chain"])
        else:
            fn = _find_def(src.tree(spec["file"]), spec["qualname"])
            if spec["kind"] == "argparse":
                entry = argparse_options(fn)
            else:
                entry = function_signature(fn, drop_self=not _is_staticmethod(fn))
            entry["source"] = f"{spec['file']}:{entry.pop('line')}"
        for key in ("kwargs_into", "via"):
            if key in spec:
                entry[key] = spec[key]
        callables[name] = entry
    trl_vllm = src.tree("trl/generation/vllm_generation.py")
    return {
        "generated_by": "scripts/api_snapshot.py",
        "versions": dict(VERSIONS),
        "wheels": {name: {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
                   for name, path in src.paths.items()},
        "callables": callables,
        # TRL's own vLLM calls, so the test can check that TRL 1.15 and the pinned vLLM fit each other.
        "trl_vllm": {
            "supported_vllm": requirement_of(src.metadata("trl"), "vllm", "vllm"),
            "llm_keywords": call_keywords(trl_vllm, "LLM"),
            "colocate_sampling_keys": dict_literal_keys(trl_vllm, "generation_kwargs"),
            "source": "trl/generation/vllm_generation.py",
        },
        "vllm_max_lora_ranks": literal_values(src.tree("vllm/config/lora.py"), "MaxLoRARanks"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel-dir", type=Path, help="where the wheels are (or go); default a temp dir")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel_dir = args.wheel_dir or Path(tmp)
        wheel_dir.mkdir(parents=True, exist_ok=True)
        download(wheel_dir)
        data = snapshot(Sources(wheel_dir))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    print(f"wrote {args.out}: {len(data['callables'])} callables from "
          + ", ".join(f"{k} {v}" for k, v in data["versions"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
