"""A run's claim on its --output_dir (issue 19, items 2, 4 and 5): nothing a run did not create is overwritten (a
model, ours or anyone's, or the run's own source); one run at a time (a lock file with the process id and host, stale
locks taken over); and an unfinished run resumes only with its own recipe, recorded in run_started.json."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch
from helpers import config_overrides, tiny_config, write_shapes_folder
from safetensors.torch import load_file
from transformers import TrainingArguments

from supmae import SupMAEForPreTraining
from supmae.cli import run_script
from supmae.tasks import classification, pretraining
from supmae.training import lock as lock_module
from supmae.training.lock import LOCK_FILE, STALE_AFTER_SECONDS, OutputDirLock
from supmae.training.runs import NOT_RECIPE_FIELDS, NUM_PROCESSES, RUN_STARTED, run_recipe


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_OVERRIDES = config_overrides()
COMMON = ["--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true", "--dataloader_num_workers", "0"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes_folder(tmp_path_factory.mktemp("shapes"), per_class=4)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A directory written by save_pretrained: a SupMAE pretraining checkpoint of the three shapes."""
    path = tmp_path_factory.mktemp("pretrained") / "model"
    SupMAEForPreTraining(tiny_config(num_labels=3)).save_pretrained(path)
    return path


def pretraining_arguments(shapes, output, *extra) -> list[str]:
    flags = f"--train_dir {shapes} --output_dir {output} --per_device_train_batch_size 4 --train_val_split 0"
    flags += " --eval_strategy no --num_figure_images 0 --seed 3"
    return [*flags.split(), "--config_overrides", TINY_OVERRIDES, *COMMON, *map(str, extra)]


def fine_tuning_arguments(model, shapes, output, *extra) -> list[str]:
    flags = f"--model_name_or_path {model} --train_dir {shapes} --output_dir {output} --train_val_split 0"
    flags += " --per_device_train_batch_size 4 --max_steps 1 --eval_strategy no --save_strategy no"
    return [*flags.split(), *COMMON, *map(str, extra)]


def fails_in_one_paragraph(main, argv, capsys) -> str:
    """`main(argv)` as the scripts run it: the exit status 2 and the one `error:` line it prints."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_script(main, argv)
    assert exit_info.value.code == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error: ")]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def snapshot(directory) -> dict:
    """Every file under `directory` with its bytes and modification time: a rewrite with the same bytes shows too."""
    return {
        str(path.relative_to(directory)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in directory.rglob("*")
        if path.is_file()
    }


# ------------------------------------------------------------------------------- item 2: nothing is overwritten


@pytest.mark.parametrize(("where", "relation"), [(".", "is"), ("sub", "lies inside"), ("..", "holds")])
def test_fine_tuning_into_its_own_source_is_refused(pretrained, shapes, tmp_path, capsys, where, relation):
    """The audit's `--model_name_or_path D --output_dir D` exited 0 after overwriting D's weights, config and card."""
    source = tmp_path / "model"
    shutil.copytree(pretrained, source)
    before = snapshot(source)
    output = os.path.normpath(source / where)
    line = fails_in_one_paragraph(classification.main, fine_tuning_arguments(source, shapes, output), capsys)
    assert f"--output_dir {output} {relation} --model_name_or_path {source}" in line, line
    assert snapshot(source) == before
    assert not (tmp_path / "model" / "sub").exists()


@pytest.mark.parametrize(
    "files",
    [
        ["model.safetensors", "config.json"],  # what save_pretrained or supmae-convert writes
        ["config.json"],
        ["pytorch_model.bin"],
        ["model.safetensors.index.json"],
        ["README.md"],  # a model card
        ["preprocessor_config.json"],
        ["checkpoint-3/model.safetensors", "checkpoint-3/trainer_state.json"],  # another Trainer's checkpoint
    ],
)
def test_a_directory_that_holds_a_model_is_refused_as_an_output(shapes, tmp_path, capsys, files):
    output = tmp_path / "theirs"
    for name in files:
        (output / name).parent.mkdir(parents=True, exist_ok=True)
        (output / name).write_text("{}")
    before = snapshot(output)
    line = fails_in_one_paragraph(pretraining.main, pretraining_arguments(shapes, output, "--max_steps", 1), capsys)
    assert f"--output_dir {output} holds a model or a run that this script did not start there" in line, line
    assert files[0].split("/")[0] in line and "Choose another --output_dir" in line
    assert snapshot(output) == before  # nothing written, not even a lock or a record


def test_a_run_of_another_script_is_not_taken_over(shapes, pretrained, tmp_path, capsys):
    output = tmp_path / "pre"
    pretraining.main(pretraining_arguments(shapes, output, "--max_steps", 2, "--save_steps", 1))
    os.remove(output / "run_complete.json")  # as if killed before its end
    before = snapshot(output)
    line = fails_in_one_paragraph(classification.main, fine_tuning_arguments(pretrained, shapes, output), capsys)
    assert f"--output_dir {output} holds a run of run_pretraining.py" in line, line
    assert snapshot(output) == before


def test_a_failed_start_leaves_no_record_so_the_corrected_command_runs(shapes, tmp_path, capsys):
    output = tmp_path / "out"
    line = fails_in_one_paragraph(
        pretraining.main,
        pretraining_arguments(tmp_path / "typo", output, "--max_steps", 1),
        capsys,
    )
    assert "does not exist" in line
    assert os.listdir(output) == []  # neither a lock nor run_started.json
    pretraining.main(pretraining_arguments(shapes, output, "--max_steps", 1))
    assert (output / "run_complete.json").is_file()


# ------------------------------------------------------------------------------------ item 4: one run at a time


LOCK_HOLDER = """
import sys, time
from supmae.training.lock import OutputDirLock
with OutputDirLock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def hold_lock(output):
    """Another process holding the lock of `output`, until its stdin is closed."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    process = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(output)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    assert process.stdout.readline().strip() == b"locked"
    return process


def test_a_second_run_in_a_locked_directory_stops_and_names_the_holder(shapes, tmp_path, capsys):
    output = tmp_path / "out"
    holder = hold_lock(output)
    try:
        line = fails_in_one_paragraph(
            pretraining.main, pretraining_arguments(shapes, output, "--max_steps", 1), capsys
        )
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert f"--output_dir {output} is in use by another run: process {holder.pid} on {os.uname().nodename}" in line
    assert str(output / LOCK_FILE) in line, line
    assert os.listdir(output) == []  # the holder removed its lock on leaving; the refused run wrote nothing


def test_the_lock_is_removed_at_the_end_of_a_run_and_after_an_error(shapes, tmp_path, capsys):
    output = tmp_path / "out"
    pretraining.main(pretraining_arguments(shapes, output, "--max_steps", 1))
    assert not (output / LOCK_FILE).exists() and (output / RUN_STARTED).is_file()
    fails_in_one_paragraph(pretraining.main, pretraining_arguments(shapes, output, "--max_steps", 2), capsys)
    assert not (output / LOCK_FILE).exists()
    fails_in_one_paragraph(
        pretraining.main, pretraining_arguments(tmp_path / "typo", tmp_path / "b", "--max_steps", 1), capsys
    )
    assert not (tmp_path / "b" / LOCK_FILE).exists()


def test_of_runs_started_together_exactly_one_gets_the_lock(tmp_path):
    """Eight processes take the lock of one directory at once (O_EXCL): one holds it, seven are refused."""
    script = """
import sys, time
from supmae.training.lock import OutputDirLock
while time.time() < float(sys.argv[2]):
    pass
try:
    lock = OutputDirLock(sys.argv[1]).acquire()
except FileExistsError:
    print("refused", flush=True)
else:
    print("locked", flush=True)
    sys.stdin.readline()
    lock.release()
"""
    env = {**os.environ, "PYTHONPATH": ROOT}
    start = str(time.time() + 5)  # every process is running by then
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "out"), start],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        for _ in range(8)
    ]
    outcomes = sorted(process.stdout.readline().strip().decode() for process in processes)
    for process in processes:
        process.stdin.close()
        process.wait(timeout=60)
    assert outcomes == ["locked"] + ["refused"] * 7


def write_lock(output, **holder):
    output.mkdir(parents=True, exist_ok=True)
    (output / LOCK_FILE).write_text(json.dumps({"started": "2026-12-01 08:00:00", "token": "theirs", **holder}))


def dead_process_id() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_stale_lock_is_taken_over_with_a_warning(shapes, tmp_path, caplog):
    """A lock on this host whose process is gone (a run killed with SIGKILL leaves one) is taken over."""
    output = tmp_path / "out"
    pid = dead_process_id()
    write_lock(output, pid=pid, host=os.uname().nodename)
    pretraining.main(pretraining_arguments(shapes, output, "--max_steps", 1))
    assert (output / "run_complete.json").is_file() and not (output / LOCK_FILE).exists()
    assert f"Taking over the stale lock {output / LOCK_FILE} of process {pid}" in caplog.text
    assert f"no process {pid} runs on this host" in caplog.text


def test_a_lock_from_another_host_is_stale_once_not_refreshed_for_ten_minutes(tmp_path, caplog):
    output = tmp_path / "out"
    write_lock(output, pid=1, host="another-host")
    with pytest.raises(FileExistsError, match="in use by another run: process 1 on another-host"):
        OutputDirLock(str(output)).acquire()
    old = time.time() - STALE_AFTER_SECONDS - 60
    os.utime(output / LOCK_FILE, (old, old))
    lock = OutputDirLock(str(output)).acquire()
    assert "last refreshed 11 minutes ago" in caplog.text
    assert json.loads((output / LOCK_FILE).read_text())["token"] == lock.holder["token"]
    lock.release()
    assert not (output / LOCK_FILE).exists()


def test_a_live_lock_is_refreshed_and_only_its_holder_removes_it(tmp_path, monkeypatch):
    monkeypatch.setattr(lock_module, "HEARTBEAT_SECONDS", 0.01)
    lock = OutputDirLock(str(tmp_path)).acquire()
    old = time.time() - STALE_AFTER_SECONDS - 60
    os.utime(tmp_path / LOCK_FILE, (old, old))
    deadline = time.time() + 60
    while os.stat(tmp_path / LOCK_FILE).st_mtime <= old + 1 and time.time() < deadline:
        time.sleep(0.01)
    assert os.stat(tmp_path / LOCK_FILE).st_mtime > old + 1, "the heartbeat never refreshed the lock"
    # Taken over meanwhile (its holder was judged gone): the old holder leaves the new lock alone.
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "x", "token": "other"}))
    lock.release()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["token"] == "other"


@pytest.mark.slow
def test_every_process_of_a_torchrun_job_stops_on_a_locked_directory(shapes, tmp_path):
    """Only the main process takes the lock; the others wait for its verdict and stop with the same message instead
    of training on (or waiting at the first collective for a main process that has left)."""
    output = tmp_path / "out"
    holder = hold_lock(output)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    try:
        result = subprocess.run(
            [
                *launcher,
                os.path.join(ROOT, "run_pretraining.py"),
                *pretraining_arguments(shapes, output, "--max_steps", 1),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and all(f"is in use by another run: process {holder.pid}" in e for e in errors), (
        result.stderr[-3000:]
    )
    assert result.returncode != 0 and os.listdir(output) == []


# ------------------------------------------------------------------------ item 5: only the same recipe resumes


def killed_after_checkpoint_4(shapes, output, *extra):
    """An 8-step run with a checkpoint every 4 steps, then what a kill after checkpoint-4 leaves; returns the weights
    the uninterrupted run ended with."""
    pretraining.main(pretraining_arguments(shapes, output, "--max_steps", 8, "--save_steps", 4, *extra))
    weights = load_file(output / "model.safetensors")
    for name in ("run_complete.json", "model.safetensors", "trainer_state.json"):
        os.remove(output / name)
    shutil.rmtree(output / "checkpoint-8")
    return weights


def test_an_unfinished_run_does_not_resume_with_another_recipe(shapes, tmp_path, capsys):
    """The audit's: killed after checkpoint-4 and rerun with --base_learning_rate 0.05 --max_steps 5, it resumed with
    the old scheduler and recorded the new command as finished."""
    output = tmp_path / "out"
    killed_after_checkpoint_4(shapes, output)
    before = snapshot(output)
    argv = pretraining_arguments(shapes, output, "--max_steps", 5, "--save_steps", 4, "--base_learning_rate", 0.05)
    line = fails_in_one_paragraph(pretraining.main, argv, capsys)
    assert f"--output_dir {output} holds an unfinished run started with other settings (run_started.json)" in line
    assert "--max_steps 8 -> 5" in line and "--base_learning_rate 0.00015 -> 0.05" in line, line
    assert "Rerun its own command to resume it (--train_dir" in line and "or choose another --output_dir" in line
    assert snapshot(output) == before


def test_the_same_recipe_resumes_whatever_its_logging_workers_or_evaluation_batch(shapes, tmp_path):
    """Options that change no trained number may differ: the resumed run ends with the uninterrupted run's weights."""
    output = tmp_path / "out"
    whole = killed_after_checkpoint_4(shapes, output)
    other = ["--logging_steps", 1, "--dataloader_num_workers", 1, "--per_device_eval_batch_size", 2]
    pretraining.main(pretraining_arguments(shapes, output, "--max_steps", 8, "--save_steps", 4, *other))
    assert json.loads((output / "trainer_state.json").read_text())["global_step"] == 8
    resumed = load_file(output / "model.safetensors")
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_resuming_another_runs_checkpoint_compares_that_runs_recipe(shapes, tmp_path, capsys):
    first = tmp_path / "first"
    killed_after_checkpoint_4(shapes, first)
    checkpoint = first / "checkpoint-4"
    argv = pretraining_arguments(shapes, tmp_path / "second", "--max_steps", 8, "--save_steps", 4, "--seed", 4)
    line = fails_in_one_paragraph(pretraining.main, [*argv, "--resume_from_checkpoint", str(checkpoint)], capsys)
    assert f"--resume_from_checkpoint {checkpoint} belongs to a run started with other settings" in line, line
    assert "--seed 3 -> 4" in line and f"--model_name_or_path {checkpoint}" in line
    assert not (tmp_path / "second" / RUN_STARTED).exists()
    # The same recipe into another directory resumes (resume_from_checkpoint and output_dir are not recipe fields).
    argv = pretraining_arguments(shapes, tmp_path / "second", "--max_steps", 8, "--save_steps", 4)
    pretraining.main([*argv, "--resume_from_checkpoint", str(checkpoint)])
    assert json.loads((tmp_path / "second" / "trainer_state.json").read_text())["global_step"] == 8


def test_the_recipe_holds_every_option_but_the_stated_ones(shapes, tmp_path):
    """Every TrainingArguments field is in the recipe or named in NOT_RECIPE; the recipe has the fields the audit
    found missing, local paths made absolute, and the number of processes."""
    model_args, data_args, args, _ = pretraining.parse(pretraining_arguments(os.path.relpath(shapes), tmp_path))
    recipe = run_recipe(model_args, data_args, args)
    for field in dataclasses.fields(TrainingArguments):
        assert (field.name in recipe) != (field.name in NOT_RECIPE_FIELDS), field.name
    for name in ("lr_scheduler_type", "max_grad_norm", "seed", "adam_beta1", "eval_strategy", "base_learning_rate"):
        assert name in recipe
    assert recipe["train_dir"] == os.path.realpath(shapes) and recipe[NUM_PROCESSES] == 1
    assert "output_dir" not in recipe and "logging_steps" not in recipe
    json.dumps(recipe)  # as recorded
