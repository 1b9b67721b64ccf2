"""Tests that launch processes: run_pretraining.py with two processes under torchrun (CPU, gloo); as 2 machines x 1
process (torchrun's c10d rendezvous on 127.0.0.1, the command of docs/PRETRAINING.md) and under `accelerate launch`,
both against 1 machine x 2 processes; and runs killed with SIGKILL and resumed. Each runs the script's `main` through tests/training/torchrun_harness.py, which records what
every process trained on (the dataset indices of each micro-batch, a digest of each image, the files it decoded) and
saves every process's final state dict, so that the tests compare what the processes did, not what their logs say.
Also: SyncBatchNorm keeps the checkpoint layout."""

import contextlib
import json
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import datasets
import psutil
import pytest
import torch
from helpers import ROOT, pretraining_arguments, script_env, tiny_config, write_image_folder
from safetensors import safe_open
from safetensors.torch import load_file

from supmae import SupMAEConfig, SupMAEForPreTraining
from supmae.training.checkpoints import CHECKPOINT_COMPLETE, last_complete_checkpoint


HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torchrun_harness.py")
TRAIN_IMAGES, STREAMED_IMAGES, PER_DEVICE_BATCH, PROCESSES = 14, 12, 2, 2
TINY_RUN = pretraining_arguments(
    per_device_train_batch_size=PER_DEVICE_BATCH, eval_strategy="no", seed=7, dataloader_num_workers=0
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    write_image_folder(root / "train", per_class=TRAIN_IMAGES // 2)
    write_image_folder(root / "val", per_class=2)
    return root


def arguments(folders, output, steps, *extra) -> list[str]:
    data = ["--train_dir", str(folders / "train"), "--validation_dir", str(folders / "val")]
    return [*TINY_RUN, *data, "--output_dir", str(output), "--max_steps", str(steps), *map(str, extra)]


def command(record, script_arguments, processes=1) -> list[str]:
    # --standalone: torchrun picks a free port itself, so runs never collide on a fixed one.
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return [sys.executable, *(launcher if processes > 1 else []), HARNESS, str(record), *script_arguments]


def run_job(record, script_arguments, processes=1) -> str:
    result = subprocess.run(
        command(record, script_arguments, processes), env=script_env(), capture_output=True, text=True, timeout=600
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "terminate called" not in log, log[-4000:]
    return log


def steps_of(record, rank=0) -> list[dict]:
    with open(record / f"rank-{rank}-steps.jsonl") as file:
        return [json.loads(line) for line in file]


def decoded_by(record, rank) -> list[str]:
    path = record / f"rank-{rank}-decoded.txt"
    return path.read_text().split("\n")[:-1] if path.exists() else []


def final_state(record, rank) -> tuple[dict, dict]:
    path = record / f"rank-{rank}.safetensors"
    with safe_open(path, framework="pt") as file:
        metadata = file.metadata()
    return load_file(path), metadata


def lr_schedule(peak: float, warmup: int, total: int, step: int) -> float:
    """The lr of optimizer step `step` (1-based): MAE's per-step linear warmup, then a half-cycle cosine to 0."""
    k = step - 1
    return peak * (k / warmup if k < warmup else 0.5 * (1 + math.cos(math.pi * (k - warmup) / (total - warmup))))


# --------------------------------------------------------------------------------------------- two processes
@pytest.fixture(scope="module")
def shards(folders, tmp_path_factory):
    """12 of the training images as a Parquet dataset of 2 shards (6 images each), and the validation images: a stream
    that splits by process. (A streamed image folder is one shard, which process 0 reads for all.)"""
    root = tmp_path_factory.mktemp("shards")
    train = datasets.load_dataset("imagefolder", data_dir=str(folders / "train"), split="train")
    train = train.shuffle(seed=0).select(range(STREAMED_IMAGES))
    for index in range(2):
        train.shard(2, index, contiguous=True).to_parquet(root / f"train-0000{index}-of-00002.parquet")
    validation = datasets.load_dataset("imagefolder", data_dir=str(folders / "val"), split="train")
    validation.to_parquet(root / "validation-00000-of-00001.parquet")
    return root


@pytest.fixture(scope="module", params=[False, True], ids=["map-style", "streaming"])
def two_process_run(request, folders, tmp_path_factory):
    streaming = request.param
    root = tmp_path_factory.mktemp("streaming" if streaming else "map-style")
    record, output = root / "record", root / "out"
    if streaming:  # the 2-shard Parquet stream: 3 whole global batches per epoch
        data_root = request.getfixturevalue("shards")
        script = [
            *TINY_RUN,
            "--dataset_name",
            str(data_root),
            "--streaming",
            "true",
            "--output_dir",
            str(output),
            "--max_steps",
            "4",
            "--save_steps",
            "4",
        ]
    else:
        script = arguments(folders, output, 4, "--save_steps", 4)
    log = run_job(record, script, processes=PROCESSES)
    return dict(streaming=streaming, record=record, output=output, log=log)


@pytest.mark.slow
def test_two_processes_end_with_identical_parameters(two_process_run):
    """Each process saved its whole state dict when training ended: every parameter is equal, bit for bit. The
    supervised head's BatchNorm running statistics are per process by design (as in the official code, without
    SyncBatchNorm: each process normalizes its own images), so they must differ, which also shows that the two files
    come from two processes that saw different images."""
    record, output = two_process_run["record"], two_process_run["output"]
    (first, first_meta), (second, second_meta) = final_state(record, 0), final_state(record, 1)
    assert (first_meta["rank"], second_meta["rank"]) == ("0", "1") and first_meta["pid"] != second_meta["pid"]
    model = SupMAEForPreTraining(SupMAEConfig.from_pretrained(output))
    parameters, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    assert first.keys() == second.keys() == parameters.keys() | buffers.keys()
    different = [name for name in parameters if not torch.equal(first[name], second[name])]
    assert different == [], f"{len(different)} parameters differ between the processes, e.g. {different[:5]}"
    statistics = [name for name in buffers if "running_" in name]
    assert statistics == ["supervised_head.batch_norm.running_mean", "supervised_head.batch_norm.running_var"]
    assert all(not torch.equal(first[name], second[name]) for name in statistics)
    assert first["supervised_head.batch_norm.num_batches_tracked"] == 4
    assert torch.equal(second["supervised_head.batch_norm.num_batches_tracked"], torch.tensor(4))
    # The model the main process wrote is its state at the end of training.
    written = load_file(output / "model.safetensors")
    assert written.keys() == first.keys() and all(torch.equal(written[k], first[k]) for k in first)
    assert "Parameters identical across the 2 processes" in two_process_run["log"]
    checkpoints = [name for name in os.listdir(output) if name.startswith("checkpoint-")]
    assert checkpoints == ["checkpoint-4"] and (output / "checkpoint-4" / CHECKPOINT_COMPLETE).is_file()


@pytest.mark.slow
def test_two_processes_use_the_scaled_learning_rate(two_process_run):
    """lr = 1.5e-4 x (2 images x 2 processes) / 256, bounded both ways: the logged lr of each step is the schedule's
    value exactly (warmup 5% of 4 steps = 1 step, then half-cycle cosine), so a process count left out of the batch,
    or another schedule, fails."""
    assert "lr = 0.00015 x 4 / 256" in two_process_run["log"]
    peak = 1.5e-4 * PER_DEVICE_BATCH * PROCESSES / 256
    history = json.loads((two_process_run["output"] / "trainer_state.json").read_text())["log_history"]
    logged = [(entry["step"], entry["learning_rate"]) for entry in history if "loss" in entry]
    expected = [(step, pytest.approx(lr_schedule(peak, 1, 4, step), rel=1e-12)) for step in (2, 4)]
    assert logged == expected  # [(2, peak), (4, peak / 4)]


@pytest.mark.slow
def test_two_processes_train_on_different_images(two_process_run):
    """In every optimizer step the two processes' micro-batches hold different images (pixel digests). Map-style: by
    index, the processes' batches of an epoch are disjoint and together cover it, less the images that drop_last
    leaves out (14 images, 4 per step: 12 in 3 steps)."""
    record = two_process_run["record"]
    first, second = steps_of(record, 0), steps_of(record, 1)
    assert [s["step"] for s in first] == [s["step"] for s in second] == [0, 1, 2, 3]
    for a, b in zip(first, second, strict=True):
        assert len(a["images"]) == len(b["images"]) == PER_DEVICE_BATCH
        assert not set(a["images"]) & set(b["images"]), f"both processes trained on the same image at step {a['step']}"
    if two_process_run["streaming"]:
        return
    epoch = [index for s in first + second if s["epoch"] == 0 for index in s["indices"]]
    per_epoch = TRAIN_IMAGES // (PER_DEVICE_BATCH * PROCESSES) * PER_DEVICE_BATCH * PROCESSES
    assert len(epoch) == len(set(epoch)) == per_epoch  # disjoint across processes, no image twice
    assert set(epoch) <= set(range(TRAIN_IMAGES))
    later = [s["indices"] for s in first + second if s["epoch"] == 1]
    assert len(later) == 2 and not set(later[0]) & set(later[1])


@pytest.mark.slow
@pytest.mark.parametrize("two_process_run", [True], ids=["streaming"], indirect=True)
def test_streamed_processes_decode_their_own_images(two_process_run):
    """Streamed from 2 Parquet shards, each process reads and decodes its own shard: the job decodes each image once
    and no process decodes for the other (DESIGN.md, "Streaming under several processes"; accelerate's default is
    that process 0 decodes every image and sends the other its batches). Over 4 steps of 2 images, each process goes
    through its 6 images once and starts them again."""
    record = two_process_run["record"]
    first, second = decoded_by(record, 0), decoded_by(record, 1)
    assert len(set(first)) == len(set(second)) == STREAMED_IMAGES // PROCESSES
    assert not set(first) & set(second)
    assert "reads and decodes every image" not in two_process_run["log"]


# ------------------------------------------------------------------------------------- killed and resumed
def kill_after_checkpoint(record, script_arguments, checkpoint) -> None:
    """Start a run and SIGKILL it once `checkpoint` is marked complete (its files are on disk, synced)."""
    process = subprocess.Popen(
        command(record, script_arguments), env=script_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not (checkpoint / CHECKPOINT_COMPLETE).exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before the checkpoint was complete"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


def killed_and_resumed(folders, root, steps, *extra) -> int:
    """Run `steps` steps with a checkpoint every 5, killed after checkpoint-5 is complete, then rerun the same command.
    Returns the step it resumed from."""
    output = root / "out"
    kill_after_checkpoint(root / "killed", arguments(folders, output, steps, *extra), output / "checkpoint-5")
    assert not (output / "model.safetensors").exists()  # it died mid-training
    resumed_from = int(os.path.basename(last_complete_checkpoint(str(output))).removeprefix("checkpoint-"))
    assert 5 <= resumed_from < steps
    log = run_job(root / "resumed", arguments(folders, output, steps, *extra))
    assert (
        f"Resuming from the last complete checkpoint in the output directory: {output / f'checkpoint-{resumed_from}'}"
        in log
    )
    # It resumed, rather than started over: the rerun trained exactly the steps after the checkpoint.
    assert [s["step"] for s in steps_of(root / "resumed")] == list(range(resumed_from, steps))
    assert json.loads((output / "trainer_state.json").read_text())["global_step"] == steps
    return resumed_from


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(folders, tmp_path):
    """SIGKILL once the step-5 checkpoint is complete, then a plain rerun (it resumes from the last complete
    checkpoint): it trains on the same images, bit for bit, as an uninterrupted run, and ends with the same weights
    (tolerance 0 on CPU)."""
    extra = ["--save_steps", 5]
    run_job(tmp_path / "straight" / "record", arguments(folders, tmp_path / "straight" / "out", 20, *extra))
    resumed_from = killed_and_resumed(folders, tmp_path / "interrupted", 20, *extra)
    straight = steps_of(tmp_path / "straight" / "record")
    before_kill = steps_of(tmp_path / "interrupted" / "killed")[:resumed_from]  # later ones were redone
    interrupted = before_kill + steps_of(tmp_path / "interrupted" / "resumed")
    assert len(straight) == 20
    for a, b in zip(straight, interrupted, strict=True):  # no batch repeated or skipped, the same crops
        assert (a["step"], a["indices"], a["images"]) == (b["step"], b["indices"], b["images"])
    expected = load_file(tmp_path / "straight" / "out" / "model.safetensors")
    actual = load_file(tmp_path / "interrupted" / "out" / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


@pytest.mark.slow
def test_killed_streamed_run_resumes(folders, tmp_path):
    """Streamed data resumes too: from the last complete checkpoint, training exactly the remaining steps to the
    requested total. Its crops come from the dataloader's RNG, so bit-exactness is not promised (README, Resuming)."""
    killed_and_resumed(folders, tmp_path, 20, "--save_steps", 5, "--streaming", "true")
    assert (tmp_path / "out" / "model.safetensors").is_file()


# ------------------------------------------------------------------------------ two machines, and accelerate launch
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def documented_multinode_launcher() -> dict[str, str]:
    """The torchrun flags of docs/PRETRAINING.md's command for several machines (`torchrun --nnodes ...`, with its
    continuation lines), as {flag: value}."""
    text = (Path(ROOT) / "docs" / "PRETRAINING.md").read_text()
    match = re.search(r"^torchrun --nnodes (?:.*\\\n)*.*$", text, re.M)
    assert match, "docs/PRETRAINING.md has no `torchrun --nnodes` command"
    words = shlex.split(match[0].replace("\\\n", " "))
    words = words[1 : words.index("run_pretraining.py")]
    assert len(words) % 2 == 0 and all(flag.startswith("--") for flag in words[::2]), words
    return dict(zip(words[::2], words[1::2], strict=True))


def multinode_launcher(node_rank: int, port: int, run_id: str) -> list[str]:
    """The docs' command for several machines, for machine `node_rank` of 2 machines of 1 process on this one: the same
    flags, with the rendezvous on 127.0.0.1. (c10d rendezvous gives the machines their ranks in the order they join;
    `--node_rank` is for the static rendezvous the docs do not use.)"""
    documented = documented_multinode_launcher()
    assert set(documented) == {"--nnodes", "--nproc_per_node", "--rdzv_backend", "--rdzv_endpoint", "--rdzv_id"}
    values = {"--nnodes": "2", "--nproc_per_node": "1", "--rdzv_endpoint": f"127.0.0.1:{port}", "--rdzv_id": run_id}
    flags = {flag: values.get(flag, value) for flag, value in documented.items()}  # --rdzv_backend as documented
    return ["-m", "torch.distributed.run", *(word for pair in flags.items() for word in pair)]


def start_machines(record, script_arguments) -> list[subprocess.Popen]:
    """Two torchrun agents, one per 'machine', started together, each logging to RECORD.machine-N.log."""
    port, run_id = free_port(), f"supmae-test-{os.getpid()}-{time.monotonic_ns()}"
    machines = []
    for node in range(2):
        with open(f"{record}.machine-{node}.log", "w") as log:  # a file, not a pipe nobody reads while it runs
            launcher = multinode_launcher(node, port, run_id)
            command = [sys.executable, *launcher, HARNESS, str(record), *script_arguments]
            machines.append(subprocess.Popen(command, env=script_env(), stdout=log, stderr=subprocess.STDOUT))
    return machines


def kill_machines(machines) -> None:
    """SIGKILL each machine's torchrun agent and its worker (torchrun starts its workers in sessions of their own, so
    the agent's process group would not reach them): the machines fail at once."""
    processes = []
    for machine in machines:
        with contextlib.suppress(psutil.NoSuchProcess):
            agent = psutil.Process(machine.pid)
            processes += [agent, *agent.children(recursive=True)]
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    psutil.wait_procs(processes, timeout=60)
    for machine in machines:
        machine.wait()


def run_machines(record, script_arguments, timeout=300) -> str:
    """Both machines to the end; if one fails the other is stopped (it would wait for its peer), as it is after
    `timeout` seconds."""
    machines, deadline = start_machines(record, script_arguments), time.time() + timeout
    try:
        while any(m.poll() is None for m in machines) and time.time() < deadline:
            if any(m.poll() not in (None, 0) for m in machines):
                time.sleep(5)  # the other's own error, if it has one, before it is stopped
                break
            time.sleep(0.1)
    finally:
        kill_machines(machines)
    logs = [Path(f"{record}.machine-{node}.log").read_text() for node in range(2)]
    for machine, log in zip(machines, logs, strict=True):
        assert machine.returncode == 0, log[-4000:]
        assert "terminate called" not in log, log[-4000:]
    return "\n".join(logs)


def assert_same_weights(expected: dict, actual: dict, tolerance: float = 1e-6) -> None:
    assert expected.keys() == actual.keys()
    worst = max((expected[k].double() - actual[k].double()).abs().max().item() for k in expected)
    assert worst <= tolerance, f"the weights differ by up to {worst:.3g}"


def placements(record) -> list[tuple[str, str, str]]:
    """(world_size, group_rank, local_rank) of the processes of ranks 0 and 1."""
    assert sorted(path.name for path in record.glob("rank-*.safetensors")) == [
        "rank-0.safetensors",
        "rank-1.safetensors",
    ]
    return [
        tuple(final_state(record, rank)[1][key] for key in ("world_size", "group_rank", "local_rank"))
        for rank in (0, 1)
    ]


MULTINODE_STEPS, MULTINODE_SAVE = 20, 5  # enough steps after checkpoint-5 for a kill to land mid-run


def multinode_arguments(folders, output) -> list[str]:
    return arguments(folders, output, MULTINODE_STEPS, "--save_steps", MULTINODE_SAVE)


@pytest.fixture(scope="module")
def one_machine_run(folders, tmp_path_factory):
    """The reference: 1 machine x 2 processes (torchrun --standalone)."""
    root = tmp_path_factory.mktemp("one-machine")
    run_job(root / "record", multinode_arguments(folders, root / "out"), processes=2)
    return dict(record=root / "record", output=root / "out")


@pytest.fixture(scope="module")
def two_machine_run(folders, tmp_path_factory):
    root = tmp_path_factory.mktemp("two-machines")
    log = run_machines(root / "record", multinode_arguments(folders, root / "out"))
    return dict(record=root / "record", output=root / "out", log=log)


@pytest.mark.slow
def test_two_machines_train_as_two_processes_on_one(two_machine_run, one_machine_run):
    """2 machines x 1 process (the docs' torchrun command, c10d rendezvous on 127.0.0.1) end with the weights of 1
    machine x 2 processes (within 1e-6), each rank trained on the same images as the same rank there, and the two
    processes were placed as asked: one per machine."""
    assert sorted(placements(two_machine_run["record"])) == [("2", "0", "0"), ("2", "1", "0")]
    assert placements(one_machine_run["record"]) == [("2", "0", "0"), ("2", "0", "1")]
    for rank in (0, 1):
        machines, one = steps_of(two_machine_run["record"], rank), steps_of(one_machine_run["record"], rank)
        assert len(machines) == MULTINODE_STEPS
        assert [(s["step"], s["indices"], s["images"]) for s in machines] == [
            (s["step"], s["indices"], s["images"]) for s in one
        ]
        assert_same_weights(
            final_state(one_machine_run["record"], rank)[0], final_state(two_machine_run["record"], rank)[0]
        )
    written = load_file(two_machine_run["output"] / "model.safetensors")
    assert_same_weights(load_file(one_machine_run["output"] / "model.safetensors"), written)
    assert "Parameters identical across the 2 processes" in two_machine_run["log"]


def kill_machines_after_checkpoint(record, script_arguments, checkpoint) -> None:
    """Start both machines and kill them (`kill_machines`) once `checkpoint` is marked complete."""
    machines = start_machines(record, script_arguments)
    deadline = time.time() + 300
    try:
        while not (checkpoint / CHECKPOINT_COMPLETE).exists():
            assert all(m.poll() is None for m in machines), "a machine ended before the checkpoint was complete"
            assert time.time() < deadline, "no complete checkpoint within 300 s"
            time.sleep(0.02)
    finally:
        kill_machines(machines)


@pytest.mark.slow
def test_two_machines_killed_resume_to_the_same_weights(folders, tmp_path, two_machine_run):
    """Both machines killed once checkpoint-5 is complete, then both started again with the same command: they resume
    from the last complete checkpoint, train only the steps after it, and end with the uninterrupted 2-machine run's
    weights (within 1e-6)."""
    output = tmp_path / "out"
    script = multinode_arguments(folders, output)
    kill_machines_after_checkpoint(tmp_path / "killed", script, output / f"checkpoint-{MULTINODE_SAVE}")
    assert not (output / "model.safetensors").exists()  # it died mid-training
    resumed_from = int(os.path.basename(last_complete_checkpoint(str(output))).removeprefix("checkpoint-"))
    assert MULTINODE_SAVE <= resumed_from < MULTINODE_STEPS
    log = run_machines(tmp_path / "resumed", script)
    checkpoint = output / f"checkpoint-{resumed_from}"
    assert f"Resuming from the last complete checkpoint in the output directory: {checkpoint}" in log
    for rank in (0, 1):
        assert [s["step"] for s in steps_of(tmp_path / "resumed", rank)] == list(range(resumed_from, MULTINODE_STEPS))
        assert_same_weights(
            final_state(two_machine_run["record"], rank)[0], final_state(tmp_path / "resumed", rank)[0]
        )
    expected = load_file(two_machine_run["output"] / "model.safetensors")
    assert_same_weights(expected, load_file(output / "model.safetensors"))


def accelerate_config(path, distributed_type: str) -> Path:
    path.write_text(
        f"compute_environment: LOCAL_MACHINE\ndistributed_type: {distributed_type}\nnum_processes: 2\n"
        f"num_machines: 1\nmachine_rank: 0\nmain_process_port: {free_port()}\nmixed_precision: 'no'\n"
    )
    return path


@pytest.mark.slow
def test_accelerate_launch_trains_as_torchrun_does(tmp_path, folders, one_machine_run):
    """`accelerate launch --config_file` (distributed_type MULTI_GPU, num_processes 2: accelerate's torchrun launch;
    on CPUs with the script's --use_cpu true) trains as torchrun's 2 processes: same placement, same images per rank,
    same weights (within 1e-6)."""
    config = accelerate_config(tmp_path / "accelerate.yaml", "MULTI_GPU")
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    script = multinode_arguments(folders, tmp_path / "out")
    assert script[script.index("--use_cpu") + 1] == "true"
    result = subprocess.run(
        [*launcher, HARNESS, str(tmp_path / "record"), *script],
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert placements(tmp_path / "record") == [("2", "0", "0"), ("2", "0", "1")]
    for rank in (0, 1):
        assert steps_of(tmp_path / "record", rank) == steps_of(one_machine_run["record"], rank)
        assert_same_weights(final_state(one_machine_run["record"], rank)[0], final_state(tmp_path / "record", rank)[0])


@pytest.mark.slow
def test_an_accelerate_multi_cpu_config_starts_one_process(tmp_path):
    """What the docs warn about: accelerate 1.x launches `distributed_type: MULTI_CPU` through mpirun, and without an
    mpirun hostfile starts one process, whatever num_processes says (a run that trains alone, with nothing to refuse);
    MULTI_GPU starts num_processes through torchrun, GPUs or not."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os, sys\n"
        "open(os.path.join(sys.argv[1], f\"process-{os.environ.get('RANK')}-of-{os.environ.get('WORLD_SIZE')}\"), 'w')\n"
    )
    started = {}
    for kind in ("MULTI_CPU", "MULTI_GPU"):
        config, found = accelerate_config(tmp_path / f"{kind}.yaml", kind), tmp_path / kind
        found.mkdir()
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), str(probe)]
        result = subprocess.run([*command, str(found)], env=script_env(), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        started[kind] = sorted(os.listdir(found))
    assert started == {"MULTI_CPU": ["process-None-of-None"], "MULTI_GPU": ["process-0-of-2", "process-1-of-2"]}


# ------------------------------------------------------------------------------------------------------- SyncBatchNorm
def test_sync_batch_norm_keeps_the_checkpoint_layout():
    model = SupMAEForPreTraining(tiny_config())
    keys = list(model.state_dict())
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # what sync_batch_norm_if_requested does on GPUs
    assert isinstance(converted.supervised_head.batch_norm, torch.nn.SyncBatchNorm)
    assert list(converted.state_dict()) == keys  # saved and resumed like the BatchNorm1d it replaces
