"""Faults a long run meets: unreadable images, a non-finite loss, a process killed while saving, a full disk, an
output directory that cannot be written, damaged or mismatched checkpoints. docs/RELIABILITY.md lists each one with
what the project does and the test here that shows it."""

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import BROKEN, logged_names, write_image_folder, write_zoo
from test_run_pretraining import ROOT, TINY, run

from supmae import SupMAEForPreTraining
from supmae.data.collators import ImageCollator
from supmae.data.images import BadImageError
from supmae.training.arguments import SupMAETrainingArguments
from supmae.training.checkpoints import (
    CHECKPOINT_COMPLETE,
    checkpoint_problem,
    last_complete_checkpoint,
    mark_checkpoint_complete,
)
from supmae.training.pretraining import SupMAETrainer
from supmae.training.trainer import NonFiniteLossError


# ------------------------------------------------------------------------------------------------ hostile images


@pytest.mark.slow
def test_pretraining_skips_broken_files_and_counts_them(tmp_path):
    """Two dataloader workers read a folder with every kind of odd and broken file: the run finishes, and the
    broken files are named once each in skipped_images.tsv and counted in the train metrics."""
    folders = tmp_path / "data"
    write_zoo(folders / "train" / "odd")
    write_image_folder(folders / "train", classes=("fine",), per_class=4)  # 12 + 4 images
    write_image_folder(folders / "val", classes=("odd", "fine"), per_class=1)
    output = tmp_path / "out"
    common = [
        "--train_dir",
        folders / "train",
        "--validation_dir",
        folders / "val",
        "--max_steps",
        4,
        "--dataloader_num_workers",
        2,
        "--eval_strategy",
        "no",
    ]
    run(*common, "--output_dir", output)  # 16 images, batch 4: one epoch
    assert logged_names(output / "skipped_images.tsv") == BROKEN
    assert json.loads((output / "train_results.json").read_text())["skipped_images"] == len(BROKEN)

    with pytest.raises(BadImageError, match=r"Cannot read image .*odd/"):
        run(*common, "--output_dir", tmp_path / "strict", "--bad_images", "error")
    assert not (tmp_path / "strict" / "model.safetensors").exists()


# --------------------------------------------------------------------------------------------- non-finite loss
class PoisonedEpochs(torch.utils.data.Dataset):
    """16 random images; every image of the epochs in `poisoned` is NaN."""

    def __init__(self, poisoned):
        self.poisoned, self.epoch = set(poisoned), 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return 16

    def __getitem__(self, index):
        pixels = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(index))
        return {"pixel_values": pixels * float("nan") if self.epoch in self.poisoned else pixels, "labels": index % 5}


def tiny_trainer(output, dataset, on_nonfinite_loss):
    from helpers import tiny_config

    torch.manual_seed(0)
    args = SupMAETrainingArguments(
        output_dir=str(output),
        per_device_train_batch_size=4,
        num_train_epochs=3,
        save_strategy="epoch",
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        on_nonfinite_loss=on_nonfinite_loss,
        learning_rate=1e-3,
    )
    return SupMAETrainer(
        model=SupMAEForPreTraining(tiny_config()), args=args, train_dataset=dataset, data_collator=ImageCollator(5)
    )


def weights(directory):
    from safetensors.torch import load_file

    return load_file(os.path.join(directory, "model.safetensors"))


def test_a_nonfinite_loss_stops_before_the_update_and_names_the_step(tmp_path):
    trainer = tiny_trainer(tmp_path, PoisonedEpochs({1}), "stop")
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 5 \(epoch 1.00\).*checkpoint-4, is intact"):
        trainer.train()
    assert checkpoint_problem(tmp_path / "checkpoint-4") is None and not (tmp_path / "checkpoint-5").exists()
    saved = weights(tmp_path / "checkpoint-4")
    for name, parameter in trainer.model.named_parameters():  # no update after the step-4 checkpoint
        assert torch.equal(parameter.detach(), saved[name]), name


def test_skipping_nonfinite_steps_leaves_weights_and_statistics_untouched(tmp_path):
    """Epoch 1 is all NaN: its four steps are skipped, so the weights and the BatchNorm statistics saved after epoch 1
    equal those after epoch 0, and epoch 2 trains on."""
    trainer = tiny_trainer(tmp_path, PoisonedEpochs({1}), "skip")
    trainer.train()
    assert trainer.nonfinite_steps_skipped == 4
    assert any(log.get("nonfinite_steps_skipped") == 4 for log in trainer.state.log_history)
    first, second, third = (weights(tmp_path / f"checkpoint-{step}") for step in (4, 8, 12))
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert any(not torch.equal(second[name], third[name]) for name in first)
    assert all(torch.isfinite(tensor).all() for tensor in third.values())


TWO_RANKS = """
import os, sys
sys.path.insert(0, {tests!r})
from test_reliability import PoisonedEpochs, tiny_trainer
from supmae.training import NonFiniteLossError
rank = int(os.environ["RANK"])
trainer = tiny_trainer({output!r}, PoisonedEpochs({{1}} if rank == 1 else set()), "stop")
try:
    trainer.train()
    print(f"rank {{rank}} finished", flush=True)
except NonFiniteLossError as error:
    print(f"rank {{rank}} stopped: {{error}}", flush=True)
del trainer
import gc, torch
gc.collect()
torch.distributed.destroy_process_group()  # as supmae.cli.run_script does: no abort at exit
"""


@pytest.mark.slow
def test_every_process_stops_together_when_one_sees_a_nonfinite_loss(tmp_path):
    """Two processes under torchrun, only rank 1's data poisoned (from epoch 1 = step 3): both stop at step 3,
    instead of rank 0 stepping on and waiting for its peer."""
    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS.format(tests=os.path.dirname(__file__), output=str(tmp_path / "out")))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*launcher, str(script)], env=env, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert "rank 1 stopped: The training loss is nan at step 3 (epoch 1.00)" in log, log[-3000:]
    assert "rank 0 stopped: The training loss is non-finite in another process at step 3 (epoch 1.00)" in log
    assert result.returncode == 0 and "terminate called" not in log, log[-3000:]
    assert checkpoint_problem(tmp_path / "out" / "checkpoint-2") is None


class PoisonedBatch(PoisonedEpochs):
    """16 random images; the fifth batch of 4 drawn (the first micro-batch of epoch 1) is NaN."""

    def __init__(self):
        super().__init__(set())
        self.calls = 0

    def __getitem__(self, index):
        self.calls += 1
        item = super().__getitem__(index)
        if 16 < self.calls <= 20:
            item["pixel_values"] = item["pixel_values"] * float("nan")
        return item


def test_a_skipped_step_drops_every_micro_batch_of_its_window(tmp_path):
    """Gradient accumulation over 2 micro-batches, a checkpoint every step: the NaN micro-batch opens step 3's window,
    so step 3 makes no update at all (the window's finite second micro-batch is dropped too), and step 4 trains."""
    trainer = tiny_trainer(tmp_path, PoisonedBatch(), "skip")
    trainer.args.gradient_accumulation_steps, trainer.args.save_strategy, trainer.args.save_steps = 2, "steps", 1
    trainer.args.num_train_epochs = 2
    trainer.train()
    assert trainer.nonfinite_steps_skipped == 1
    second, third, fourth = (weights(tmp_path / f"checkpoint-{step}") for step in (2, 3, 4))
    parameters = [name for name, _ in trainer.model.named_parameters()]  # the finite micro-batch moved BatchNorm
    assert all(torch.equal(second[name], third[name]) for name in parameters)
    assert any(not torch.equal(third[name], fourth[name]) for name in parameters)


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
    argv = [
        *TINY,
        "--train_dir",
        str(folders / "train"),
        "--validation_dir",
        str(folders / "val"),
        "--output_dir",
        str(output),
        "--max_steps",
        "20",
        "--save_steps",
        "5",
        "--eval_strategy",
        "no",
        "--seed",
        "7",
        "--per_device_train_batch_size",
        "2",
        "--dataloader_num_workers",
        "0",
        "--save_total_limit",
        "1",
    ]
    script = KILL_AT_STEP_10.format(root=ROOT, owner=owner, function=function, argv=argv)
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
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
        run(
            "--train_dir",
            folders / "train",
            "--output_dir",
            output,
            "--max_steps",
            20,
            "--save_steps",
            5,
            "--eval_strategy",
            "no",
            "--dataloader_num_workers",
            0,
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
        run(
            "--train_dir",
            folders,
            "--output_dir",
            output,
            "--max_steps",
            20,
            "--save_steps",
            5,
            "--eval_strategy",
            "no",
            "--dataloader_num_workers",
            0,
        )
    assert not (output / "checkpoint-10").exists() and checkpoint_problem(output / "checkpoint-5") is None


def test_a_checkpoint_damaged_after_saving_is_not_resumed_from(tmp_path):
    for step in (3, 6):
        checkpoint = tmp_path / f"checkpoint-{step}"
        checkpoint.mkdir()
        (checkpoint / "model.safetensors").write_bytes(b"x" * 100)
        (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        mark_checkpoint_complete(str(checkpoint), step)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-6")
    (tmp_path / "checkpoint-6" / "model.safetensors").write_bytes(b"x" * 40)  # truncated by a bad copy, say
    assert checkpoint_problem(tmp_path / "checkpoint-6") == "model.safetensors has 40 bytes, 100 when it was saved"
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-3")
    (tmp_path / "checkpoint-3" / "trainer_state.json").write_text('{"global_st')  # killed while writing it
    assert checkpoint_problem(tmp_path / "checkpoint-3").startswith("its trainer_state.json is unreadable")
    assert last_complete_checkpoint(tmp_path) is None


def test_a_run_killed_during_its_final_save_resumes_instead_of_counting_as_finished(tmp_path):
    from types import SimpleNamespace

    from supmae.training.checkpoints import resume_checkpoint
    from supmae.training.runs import finished_run

    (tmp_path / "checkpoint-3").mkdir()
    (tmp_path / "checkpoint-3" / "trainer_state.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"half of the final weights")  # no trainer_state.json after it
    args = SimpleNamespace(output_dir=str(tmp_path), resume_from_checkpoint=None, process_index=0)
    assert finished_run(str(tmp_path), ["--the", "command"]) is None
    assert resume_checkpoint(args) == str(tmp_path / "checkpoint-3")
    # Killed after the final model and state but before its record (run_complete.json): still resumed.
    (tmp_path / "trainer_state.json").write_text("{}")
    assert finished_run(str(tmp_path), ["--the", "command"]) is None
    # A model and its state with neither a record nor a checkpoint to resume from: kept, not overwritten.
    (tmp_path / "checkpoint-3" / "trainer_state.json").unlink()
    with pytest.raises(FileExistsError, match="already holds a finished run"):
        finished_run(str(tmp_path), ["--the", "command"])


def test_resume_edge_cases(tmp_path):
    """A checkpoint folder with another name, a second crash at the same step, and a damaged mark."""
    from types import SimpleNamespace

    from supmae.training.checkpoints import resume_checkpoint

    def checkpoint(path, step, mark=True):
        path.mkdir()
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        if mark:
            mark_checkpoint_complete(str(path), step)

    checkpoint(tmp_path / "best_model", 6)
    checkpoint(tmp_path / "checkpoint-3", 3)
    checkpoint(tmp_path / "checkpoint-9", 9, mark=False)  # cut short
    (tmp_path / "incomplete-checkpoint-9").mkdir()  # from an earlier crash at the same step
    args = SimpleNamespace(
        output_dir=str(tmp_path), resume_from_checkpoint=str(tmp_path / "best_model"), process_index=0
    )
    assert resume_checkpoint(args) == str(tmp_path / "best_model")  # its step, 6, read from trainer_state.json
    assert (tmp_path / "incomplete-checkpoint-9.2").is_dir() and not (tmp_path / "checkpoint-9").exists()
    (tmp_path / "checkpoint-3" / CHECKPOINT_COMPLETE).write_text("{")
    assert checkpoint_problem(tmp_path / "checkpoint-3").startswith(f"its {CHECKPOINT_COMPLETE} is unreadable")
    assert last_complete_checkpoint(tmp_path) is None


def test_a_skipped_step_under_fp16_leaves_the_weights_and_lowers_the_scale():
    """fp16's GradScaler needs gradients to inspect: they are made NaN, so it skips the step itself."""
    from supmae.training.trainer import drop_gradients

    layer = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    before = [p.detach().clone() for p in layer.parameters()]
    scaler.scale(layer(torch.randn(3, 4)).sum()).backward()
    drop_gradients(layer, keep_for_scaler=True)
    scaler.step(optimizer)
    scaler.update()
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters(), strict=True))
    assert scaler.get_scale() < 1024.0


def test_resuming_from_a_named_incomplete_checkpoint_is_refused(tmp_path):
    (tmp_path / "checkpoint-4").mkdir()
    with pytest.raises(ValueError, match=r"Cannot resume from --resume_from_checkpoint .*checkpoint-4: its save did"):
        run("--train_dir", tmp_path, "--output_dir", tmp_path, "--resume_from_checkpoint", tmp_path / "checkpoint-4")


# ------------------------------------------------------------------------------------------- the output directory
def test_an_output_directory_that_cannot_be_written_fails_before_training(tmp_path):
    folders = write_image_folder(tmp_path / "data", per_class=4)
    (tmp_path / "a_file").write_text("not a directory")
    with pytest.raises(OSError, match=r"--output_dir .*a_file/out is not writable \(Not a directory\)"):
        run("--train_dir", folders, "--output_dir", tmp_path / "a_file" / "out", "--max_steps", 1)


def test_too_little_disk_space_fails_before_training(tmp_path, monkeypatch):
    folders = write_image_folder(tmp_path / "data", per_class=4)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr("supmae.training.runs.shutil.disk_usage", lambda path: usage._replace(free=100_000))
    with pytest.raises(OSError, match=r"has 0\.1 MiB free; a checkpoint of this model takes about 0\.\d+ MiB"):
        run("--train_dir", folders, "--output_dir", tmp_path / "out", "--max_steps", 1)
    message = r"3 checkpoints \(--save_total_limit 2, plus the one being written\) of this model take about"
    with pytest.raises(OSError, match=message):
        run("--train_dir", folders, "--output_dir", tmp_path / "out", "--max_steps", 1, "--save_total_limit", 2)
    assert not any(name.startswith("checkpoint-") for name in os.listdir(tmp_path / "out"))


# ---------------------------------------------------------------------------------------------------------- soak
@pytest.mark.slow
def test_a_short_soak_keeps_memory_flat():
    """600 steps through digits, two dataloader workers re-created every epoch and rotated checkpoints: resident
    memory after warm-up grows by less than 20 MiB (benchmarks/soak.py records thousands of steps; throughput is
    recorded there, never asserted)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import soak

    record = soak.main(["--steps", "600", "--window", "100"])
    summary = record["summary"]
    assert summary["steps"] == 600 and len(record["windows"]) == 6
    assert summary["rss_growth_mib_after_warmup"] < 20, record["windows"]
    assert summary["checkpoints_left"] == ["checkpoint-500", "checkpoint-600"]
