"""Run directories: atomic writes, lock, manifest, path safety, writability checks."""

import json
import os
import subprocess
import sys

import pytest

from medr1.runs import (
    OutputDirError,
    RunDir,
    RunLockedError,
    atomic_write_text,
    check_writable,
    redact,
    safe_child,
    write_manifest,
)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "a" / "file.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.txt"]


def test_second_job_refuses_a_locked_run(tmp_path):
    run = RunDir(tmp_path / "run")
    # A live process (this test's child) holds the lock.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from medr1.runs import RunDir\n"
        f"with RunDir({str(run.path)!r}).lock('train'):\n"
        "    print('locked', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"in use by train \(pid {holder.pid}"), run.lock("eval"):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    run.lock_path.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "job": "train"}))
    with run.lock("train"):
        assert json.loads(run.lock_path.read_text())["pid"] == os.getpid()
    assert not run.lock_path.exists()


def test_lock_is_reentrant_for_pipeline_children(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDR1_LOCK_TOKEN", "pipeline-123")
    run = RunDir(tmp_path / "run")
    with run.lock("pipeline"):
        child = subprocess.run([sys.executable, "-c", (
            "from medr1.runs import RunDir\n"
            f"with RunDir({str(run.path)!r}).lock('train'): print('entered')")],
            capture_output=True, text=True, env={**os.environ})
        assert child.stdout.strip() == "entered", child.stderr
        assert run.lock_path.exists()  # the child did not release the pipeline's lock


@pytest.mark.parametrize("relative", ["../outside.txt", "/etc/passwd", "a/../../b"])
def test_paths_cannot_escape_the_run_directory(tmp_path, relative):
    with pytest.raises(OutputDirError, match="escapes the run directory"):
        safe_child(tmp_path, relative)


def test_safe_child_allows_nested_paths(tmp_path):
    assert safe_child(tmp_path, "eval/base/summary.json") == tmp_path.resolve() / "eval/base/summary.json"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only directories")
def test_read_only_output_dir_fails_before_work(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(OutputDirError, match="cannot write"):
        check_writable(ro / "run")


def test_read_only_output_dir_fails_before_work_even_as_root(tmp_path):
    # Root ignores permission bits, so use a path whose parent is a file: nothing can be created there.
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputDirError, match="cannot write"):
        check_writable(blocker / "run")


def test_full_disk_fails_before_work(tmp_path):
    with pytest.raises(OutputDirError, match="MiB free"):
        check_writable(tmp_path, min_free_bytes=10**18)


def test_manifest_records_provenance_without_secrets(tmp_path):
    run = RunDir(tmp_path / "run")
    params = {"seed": 3, "model": "x", "hf_token": "hf_abcdefghijklmnopqrstuvwxyz"}
    write_manifest(run, job="train", params=params, data_hashes={"train_pool": "abc"})
    write_manifest(run, job="eval", params={"seed": 3})
    manifest = json.loads(run.manifest_path.read_text())
    job = manifest["jobs"]["train"]
    assert set(manifest["jobs"]) == {"train", "eval"}  # one entry per job, kept on later writes
    assert job["seed"] == 3 and job["data_hashes"] == {"train_pool": "abc"}
    assert job["packages"]["torch"] and "cpu_count" in job["hardware"] and "git_sha" in job
    assert "hf_abcdefghijklmnopqrstuvwxyz" not in run.manifest_path.read_text()


def test_redact_catches_token_shaped_values():
    assert redact({"note": "hf_" + "x" * 30, "nested": [{"api_key": "k"}]}) == {
        "note": "<redacted>", "nested": [{"api_key": "<redacted>"}]}


def test_redact_keeps_vocabulary_tokens_but_not_secrets_inside_them():
    # pad_token and token counts are run settings a reader needs (the effective GRPO config records the pad
    # token Unsloth used to change); a credential pasted into one is still caught by the value check.
    values = {"pad_token": "<|im_end|>", "eval_max_new_tokens": 24, "hf_token": "abc",
              "effective_grpo_config": {"pad_token": "hf_" + "y" * 30, "pad_token_id": 2}}
    assert redact(values) == {"pad_token": "<|im_end|>", "eval_max_new_tokens": 24, "hf_token": "<redacted>",
                              "effective_grpo_config": {"pad_token": "<redacted>", "pad_token_id": 2}}
