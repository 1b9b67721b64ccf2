"""Faults a long run meets, through the pretraining task: unreadable images, a process killed while saving, a full
disk, an output directory that cannot be written. docs/RELIABILITY.md lists each fault with what the project does and
the test that shows it; the faults met below the task are tested beside their code (tests/data/test_images.py,
tests/training/test_trainer.py for a non-finite loss, tests/training/test_checkpoints.py, tests/models/test_loading.py
for damaged or mismatched checkpoints)."""

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest
from helpers import (
    BROKEN,
    ROOT,
    logged_names,
    pretrain,
    pretraining_arguments,
    script_env,
    write_image_folder,
    write_zoo,
)

from supmae.data.images import BadImageError
from supmae.training.checkpoints import CHECKPOINT_COMPLETE, checkpoint_problem, last_complete_checkpoint


# ------------------------------------------------------------------------------------------------- broken images


@pytest.mark.slow
def test_pretraining_skips_broken_files_and_counts_them(tmp_path):
    """Two dataloader workers read a folder with every kind of odd and broken file: the run finishes, and the
    broken files are named once each in skipped_images.tsv and counted in the train metrics."""
    folders = tmp_path / "data"
    write_zoo(folders / "train" / "odd")
    write_image_folder(folders / "train", classes=("fine",), per_class=4)  # 12 + 4 images
    write_image_folder(folders / "val", classes=("odd", "fine"), per_class=1)
    output = tmp_path / "out"
    common = dict(
        train_dir=folders / "train",
        validation_dir=folders / "val",
        max_steps=4,
        dataloader_num_workers=2,
        eval_strategy="no",
    )
    pretrain(**common, output_dir=output)  # 16 images, batch 4: one epoch
    assert logged_names(output / "skipped_images.tsv") == BROKEN
    assert json.loads((output / "train_results.json").read_text())["skipped_images"] == len(BROKEN)

    with pytest.raises(BadImageError, match=r"Cannot read image .*odd/"):
        pretrain(**common, output_dir=tmp_path / "strict", bad_images="error")
    assert not (tmp_path / "strict" / "model.safetensors").exists()


# -------------------------------------------------------------------------------------------------- checkpoints
KILL_AT_STEP_10 = """
import os, sys
import transformers
import supmae.training.trainer
from supmae.tasks import pretraining
original = {owner}.{function}
def die_at_step_10(first, *args):  # a Trainer method (self, ...) or mark_checkpoint_complete(checkpoint, step)
    if (first.state.global_step if hasattr(first, "state") else args[0]) == 10:
        os._exit(9)
    return original(first, *args)
{owner}.{function} = die_at_step_10
pretraining.main({argv!r})
"""


def killed_at_step_10(tmp_path, owner, function):
    folders = tmp_path / "data"
    write_image_folder(folders / "train", per_class=6)
    write_image_folder(folders / "val", per_class=2)
    output = tmp_path / "out"
    argv = pretraining_arguments(
        train_dir=folders / "train",
        validation_dir=folders / "val",
        output_dir=output,
        max_steps=20,
        save_steps=5,
        eval_strategy="no",
        seed=7,
        per_device_train_batch_size=2,
        dataloader_num_workers=0,
        save_total_limit=1,
    )
    script = KILL_AT_STEP_10.format(owner=owner, function=function, argv=argv)
    env = script_env()
    killed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == 9, killed.stderr[-3000:]
    return output, argv, env


def resume(argv, env):
    resumed = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run_pretraining.py"), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    return resumed.stdout + resumed.stderr


@pytest.mark.slow
def test_a_process_killed_after_writing_a_checkpoint_keeps_the_one_before(tmp_path):
    """Killed after Trainer wrote checkpoint-10 but before it was synced and marked complete, with --save_total_limit
    1: plain Trainer would already have deleted checkpoint-5; here it is rotated away only once checkpoint-10 is
    marked, and the rerun resumes from it."""
    output, argv, env = killed_at_step_10(tmp_path, "supmae.training.trainer", "mark_checkpoint_complete")
    assert (output / "checkpoint-5" / CHECKPOINT_COMPLETE).exists()
    assert (output / "checkpoint-10" / "trainer_state.json").exists()
    assert not (output / "checkpoint-10" / CHECKPOINT_COMPLETE).exists()
    # Its files were never synced: in a run whose checkpoints carry the mark, an unmarked one is not trusted.
    assert last_complete_checkpoint(output) == str(output / "checkpoint-5")
    log = resume(argv, env)
    assert f"Resuming from the last complete checkpoint in the output directory: {output / 'checkpoint-5'}" in log
    assert (output / "incomplete-checkpoint-10").is_dir()
    assert sorted(n for n in os.listdir(output) if n.startswith("checkpoint-")) == ["checkpoint-20"]


@pytest.mark.slow
def test_a_process_killed_while_saving_leaves_the_previous_checkpoint(tmp_path):
    """The run dies inside the step-10 save (model and optimizer written, RNG state and trainer state not) with
    --save_total_limit 1: checkpoint-5 is still there and complete, and a plain rerun resumes from it, moves the
    half-written checkpoint aside and finishes."""
    output, argv, env = killed_at_step_10(tmp_path, "transformers.Trainer", "_save_rng_state")
    assert (output / "checkpoint-10" / "optimizer.pt").exists()
    assert checkpoint_problem(output / "checkpoint-10") == "its save did not finish (no trainer_state.json)"
    assert last_complete_checkpoint(output) == str(output / "checkpoint-5")
    assert (output / "checkpoint-5" / CHECKPOINT_COMPLETE).exists()

    log = resume(argv, env)
    assert f"Resuming from the last complete checkpoint in the output directory: {output / 'checkpoint-5'}" in log
    assert (output / "incomplete-checkpoint-10" / "optimizer.pt").exists()  # moved aside, not deleted
    assert json.loads((output / "trainer_state.json").read_text())["global_step"] == 20
    assert sorted(n for n in os.listdir(output) if n.startswith("checkpoint-")) == ["checkpoint-20"]


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import transformers

    folders = tmp_path / "data"
    write_image_folder(folders / "train", per_class=6)
    save = transformers.Trainer._save_optimizer_and_scheduler

    def disk_full_at_step_10(self, output_dir):
        if self.state.global_step == 10:
            (tmp_path / "out" / "checkpoint-10" / "optimizer.pt").write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, output_dir)

    monkeypatch.setattr(transformers.Trainer, "_save_optimizer_and_scheduler", disk_full_at_step_10)
    output = tmp_path / "out"
    message = r"Saving .*checkpoint-10 failed \(OSError: \[Errno 28\] No space left on device\); the partial "
    with pytest.raises(OSError, match=message + r"checkpoint was removed\. The last complete checkpoint is .*-5\."):
        pretrain(
            train_dir=folders / "train",
            output_dir=output,
            max_steps=20,
            save_steps=5,
            eval_strategy="no",
            dataloader_num_workers=0,
        )
    assert not (output / "checkpoint-10").exists() and checkpoint_problem(output / "checkpoint-5") is None
    assert not (output / "model.safetensors").exists()


def test_a_real_write_failure_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """Not a simulated error: at step 10 the process may not write files larger than checkpoint-5's weights
    (RLIMIT_FSIZE), so writing optimizer.pt fails inside torch.save (a RuntimeError, not an OSError)."""
    import resource
    import signal

    import transformers

    folders = write_image_folder(tmp_path / "data", per_class=6)
    output = tmp_path / "out"
    save = transformers.Trainer._save_checkpoint

    def limited_at_step_10(self, model, trial):
        if self.state.global_step != 10:
            return save(self, model, trial)
        limit = os.path.getsize(output / "checkpoint-5" / "model.safetensors") + 4096
        previous = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, previous[0][1]))
        try:
            return save(self, model, trial)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, previous[0])
            signal.signal(signal.SIGXFSZ, previous[1])

    monkeypatch.setattr(transformers.Trainer, "_save_checkpoint", limited_at_step_10)
    with pytest.raises(OSError, match=r"Saving .*checkpoint-10 failed \(RuntimeError: .*\); the partial checkpoint"):
        pretrain(
            train_dir=folders,
            output_dir=output,
            max_steps=20,
            save_steps=5,
            eval_strategy="no",
            dataloader_num_workers=0,
        )
    assert not (output / "checkpoint-10").exists() and checkpoint_problem(output / "checkpoint-5") is None


def test_resuming_from_a_named_incomplete_checkpoint_is_refused(tmp_path):
    (tmp_path / "checkpoint-4").mkdir()
    with pytest.raises(ValueError, match=r"Cannot resume from --resume_from_checkpoint .*checkpoint-4: its save did"):
        pretrain(  # the data is never read (the checkpoint is refused first); the output apart from it
            train_dir=tmp_path / "data", output_dir=tmp_path / "out", resume_from_checkpoint=tmp_path / "checkpoint-4"
        )


# ------------------------------------------------------------------------------------------- the output directory
def test_an_output_directory_that_cannot_be_written_fails_before_training(tmp_path):
    folders = write_image_folder(tmp_path / "data", per_class=4)
    (tmp_path / "a_file").write_text("not a directory")
    with pytest.raises(OSError, match=r"--output_dir .*a_file/out is not writable \(Not a directory\)"):
        pretrain(train_dir=folders, output_dir=tmp_path / "a_file" / "out", max_steps=1)


def test_too_little_disk_space_fails_before_training(tmp_path, monkeypatch):
    folders = write_image_folder(tmp_path / "data", per_class=4)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr("supmae.training.runs.shutil.disk_usage", lambda path: usage._replace(free=100_000))
    with pytest.raises(OSError, match=r"has 0\.1 MiB free; a checkpoint of this model takes about 0\.\d+ MiB"):
        pretrain(train_dir=folders, output_dir=tmp_path / "out", max_steps=1)
    message = r"3 checkpoints \(--save_total_limit 2, plus the one being written\) of this model take about"
    with pytest.raises(OSError, match=message):
        pretrain(train_dir=folders, output_dir=tmp_path / "out", max_steps=1, save_total_limit=2)
    assert not any(name.startswith("checkpoint-") for name in os.listdir(tmp_path / "out"))
