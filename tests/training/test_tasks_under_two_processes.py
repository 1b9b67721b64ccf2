"""The tasks under two processes (issue 22): classification (fine-tuning, the linear probe on cached features,
evaluation) and segmentation (training, then the sliding-window evaluation) under torchrun (CPU, gloo) report what
one process does, see each training image at most once per epoch across the processes, score each evaluation image
once, and only the main process writes; so does the transfer suite (the linear probe, and fine-tuning);
run_segmentation.py refuses sharded parameters (--fsdp, --deepspeed with ZeRO stage 3) on any back end.

Each run goes through tests/training/tasks_harness.py, which records what every process fetched for training, the
feature caches and confusion matrices it built, and every write it made under --output_dir."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import TINY_SEGMENTATION, flags, script_env, tiny_config, write_ade20k_folder, write_image_folder
from PIL import Image
from safetensors.torch import load_file

from supmae import SupMAEForPreTraining
from supmae.interop.upernet import SupMAEUperNetForSemanticSegmentation
from supmae.metrics import metrics_from_confusion_matrix
from supmae.tasks import segmentation
from supmae.training.segmentation import SupMAESegmentationTrainer


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tasks_harness.py")
FSDP_CONFIG = os.path.join(ROOT, "examples", "fsdp_config.json")
TRAIN_IMAGES, VALIDATION_IMAGES, GLOBAL_BATCH = 14, 5, 4  # odd validation: DistributedSampler's padding would show
QUIET = flags(report_to="none", disable_tqdm=True, use_cpu=True, dataloader_num_workers=0, seed=3)
CLASSIFY = [*QUIET, *flags(per_device_eval_batch_size=2, logging_steps=1, save_strategy="no")]
# Weight updates of one process against two, as a fraction of the largest entry of each tensor's update. The
# gradients differ by float32 rounding only (one process averages a batch of 4, two average 2 + 2 with DDP's
# all-reduce): the logged gradient norms agree within 1e-5 relative. The probe's SGD passes that on (measured: under
# 1e-6). AdamW divides each gradient by its own running RMS, so an entry whose gradient is zero but for rounding (the
# keys' bias: softmax ignores a constant added to all of a query's scores) moves by rounding noise at full step size
# (measured: 0.83% of the largest update of layer 0's qkv bias, under 0.07% elsewhere).
SGD_TOLERANCE, ADAMW_TOLERANCE = 1e-5, 2e-2


# ----------------------------------------------------------------------------------------------------- launching
def launch(record, task, arguments, processes=1) -> subprocess.CompletedProcess:
    # --standalone: torchrun picks a free port itself.
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command = [sys.executable, *(launcher if processes > 1 else []), HARNESS, str(record), task, *map(str, arguments)]
    return subprocess.run(command, env=script_env(), capture_output=True, text=True, timeout=600)


def run_job(record, task, arguments, processes=1) -> str:
    result = launch(record, task, arguments, processes)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "terminate called" not in log, log[-4000:]
    return log


def items(record, rank=0) -> list[dict]:
    path = record / f"rank-{rank}-items.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def writes(record, rank) -> list[dict]:
    return [json.loads(line) for line in (record / f"rank-{rank}-writes.jsonl").read_text().splitlines()]


def report(output, name="validation") -> dict:
    return json.loads((output / f"eval_{name}.json").read_text())["metrics"]


def assert_only_the_main_process_writes(record, output) -> None:
    """Process 1 asked Python for no write under --output_dir but the checks every process makes: creating the
    directory that exists (os.makedirs with exist_ok) and the writability probe (a temporary .write-test-* file,
    removed at once). Process 0 wrote the run's files."""
    for write in writes(record, 1):
        probe = os.path.basename(write["path"]).startswith(".write-test-")
        assert write["path"] == str(output) or probe, f"process 1 wrote {write}"
    assert any(w["path"].endswith("eval_validation.json") for w in writes(record, 0))


def assert_disjoint_epochs(record, processes=2) -> dict[int, list[int]]:
    """Within each epoch the processes fetched different items, each item at most once; returns {epoch: indices}."""
    epochs = {}
    for rank in range(processes):
        for item in items(record, rank):
            epochs.setdefault(item["epoch"], []).append(item["index"])
    for epoch, indices in epochs.items():
        assert len(indices) == len(set(indices)), f"an item twice in epoch {epoch}: {sorted(indices)}"
    return epochs


def assert_close_updates(trained, reference, initial, names, tolerance) -> None:
    """Each tensor's update (trained - initial) is large and agrees with the reference's within `tolerance` of its
    largest entry."""
    for name in names:
        update, expected = trained[name] - initial[name], reference[name] - initial[name]
        scale = expected.abs().max().item()
        assert scale > 1e-4, f"{name} barely moved ({scale:g}): the comparison would show nothing"
        torch.testing.assert_close(update, expected, rtol=0, atol=tolerance * scale, msg=name)


# ------------------------------------------------------------------------------------------------- classification
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """14 training images (7 per class), 5 validation images (3 cats, 2 dogs) and a tiny pretraining checkpoint."""
    root = tmp_path_factory.mktemp("classification")
    write_image_folder(root / "train", per_class=TRAIN_IMAGES // 2)
    write_image_folder(root / "val", per_class=3)
    (root / "val" / "dog" / "dog_2.jpg").unlink()
    torch.manual_seed(0)
    config = tiny_config(num_labels=2, id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1})
    SupMAEForPreTraining(config).save_pretrained(root / "pretrained")
    return root


def classification_arguments(data, output, *extra) -> list[str]:
    sources = flags(model_name_or_path=data / "pretrained", train_dir=data / "train", validation_dir=data / "val")
    return [*sources, *flags(output_dir=output), *CLASSIFY, *map(str, extra)]


@pytest.fixture(scope="module")
def finetuned(data, tmp_path_factory):
    """4 steps of a global batch of 4 (crossing into epoch 2), as 4 images in one process and 2 + 2 in two, with a
    learning rate that moves the weights; without the draws that depend on the batch's process (mixup / CutMix pair
    images within a process's batch; stochastic depth draws per process)."""
    root = tmp_path_factory.mktemp("finetune")
    runs = {}
    for processes in (1, 2):
        record, output = root / f"record-{processes}", root / f"out-{processes}"
        batch = GLOBAL_BATCH // processes
        extra = flags(max_steps=4, per_device_train_batch_size=batch, learning_rate=0.01, warmup_steps=0)
        extra += flags(mixup=0, cutmix=0, drop_path_rate=0)
        log = run_job(record, "classification", classification_arguments(data, output, *extra), processes)
        runs[processes] = dict(record=record, output=output, log=log)
    return runs


def logged_losses(output) -> list[float]:
    """Each step's training loss and gradient norm, as the Trainer logged them (every step)."""
    history = json.loads((output / "trainer_state.json").read_text())["log_history"]
    return [value for entry in history if "loss" in entry for value in (entry["loss"], entry["grad_norm"])]


@pytest.mark.slow
def test_fine_tuning_under_two_processes_matches_one(finetuned, data):
    """The same global batches (accelerate gives each process alternate batches of the one sampler) and the same
    crops (drawn from (seed, epoch, index)): the same training losses, weights and validation metrics, up to float32
    rounding."""
    one, two = (finetuned[p]["output"] for p in (1, 2))
    assert logged_losses(two) == pytest.approx(logged_losses(one), rel=1e-5)
    assert len(logged_losses(one)) == 2 * 4
    initial = load_file(data / "pretrained" / "model.safetensors")
    trained = {p: load_file(finetuned[p]["output"] / "model.safetensors") for p in (1, 2)}
    encoder = [name for name in trained[1] if name.startswith("supmae.") and name in initial]
    assert len(encoder) > 20
    assert_close_updates(trained[2], trained[1], initial, encoder, ADAMW_TOLERANCE)
    first, second = report(one), report(two)
    assert first["num_samples"] == second["num_samples"] == VALIDATION_IMAGES  # no padded duplicate scored
    assert first["top1"] == second["top1"] and first["top5"] == second["top5"]
    assert second["loss"] == pytest.approx(first["loss"], rel=1e-5)


@pytest.mark.slow
def test_fine_tuning_processes_see_each_training_image_once_per_epoch(finetuned):
    """Epoch 1: 3 global batches of 4 (the last 2 of 14 images are dropped, as in one process: MAE drops the last
    incomplete batch), the processes' halves disjoint and together the images one process trained on; no image is
    a padded duplicate. Epoch 2 begins with the 4th step: its batch and the next, which accelerate's dataloader
    fetches one ahead (one process does the same)."""
    epochs = assert_disjoint_epochs(finetuned[2]["record"])
    one = assert_disjoint_epochs(finetuned[1]["record"], processes=1)
    per_epoch = TRAIN_IMAGES // GLOBAL_BATCH * GLOBAL_BATCH
    assert sorted(epochs) == sorted(one) == [0, 1]
    assert len(epochs[0]) == per_epoch and len(epochs[1]) == 2 * GLOBAL_BATCH
    assert set(epochs[0]) == set(one[0]) and set(epochs[1]) == set(one[1]) and set(epochs[0]) <= set(range(14))
    assert len(items(finetuned[2]["record"], 0)) == len(items(finetuned[2]["record"], 1)) == (per_epoch + 8) // 2


@pytest.mark.slow
def test_fine_tuning_is_written_by_the_main_process_only(finetuned):
    """The two-process folder holds exactly what the one-process run writes (the model, its code, the processor,
    the trainer state, the report, the card, the run's records), and only process 0 wrote any of it."""
    one, two = (finetuned[p]["output"] for p in (1, 2))
    assert sorted(os.listdir(two)) == sorted(os.listdir(one))
    assert not [name for name in os.listdir(two) if name.startswith(".")]  # no temporary or partial file is left
    assert_only_the_main_process_writes(finetuned[2]["record"], two)


@pytest.fixture(scope="module")
def probed(data, tmp_path_factory):
    """The linear probe on cached features, 3 steps of a global batch of 4 (the first epoch's whole batches): one
    process as 2 micro-batches of 2 accumulated, two processes as 2 each. The probe's BatchNorm normalizes each
    micro-batch by itself, so these, not a batch of 4, give the same gradients."""
    root = tmp_path_factory.mktemp("linprobe")
    runs = {}
    for processes in (1, 2):
        record, output = root / f"record-{processes}", root / f"out-{processes}"
        extra = flags(mode="linprobe", cache_features=True, max_steps=3, per_device_train_batch_size=2)
        extra += flags(gradient_accumulation_steps=3 - processes, learning_rate=0.1)
        log = run_job(record, "classification", classification_arguments(data, output, *extra), processes)
        runs[processes] = dict(record=record, output=output, log=log)
    return runs


@pytest.mark.slow
def test_cached_linear_probe_under_two_processes(probed, data):
    """The feature caches hold each image once, in the dataset's order, in both processes (the prediction loop's
    padded rows are cut); the head trains on them as one process does; each feature row is fetched at most once per
    epoch; the metrics are those of the saved model (the processes evaluate with the main process's BatchNorm
    statistics, not their own)."""
    record_one, record_two = probed[1]["record"], probed[2]["record"]
    for index, size in ((0, TRAIN_IMAGES), (1, VALIDATION_IMAGES)):  # the training set's cache, the validation set's
        one = load_file(record_one / f"rank-0-features-{index}.safetensors")
        for rank in (0, 1):
            two = load_file(record_two / f"rank-{rank}-features-{index}.safetensors")
            assert two["features"].shape[0] == size and torch.equal(two["labels"], one["labels"])
            # Images batched with other images: float32 rounding only.
            torch.testing.assert_close(two["features"], one["features"], rtol=0, atol=1e-5)
    epochs = assert_disjoint_epochs(record_two)
    assert sorted(epochs) == [0] and len(epochs[0]) == 3 * GLOBAL_BATCH
    # The 3 steps' micro-batches of one process (which also fetched its 7th, the epoch's last, one ahead).
    assert set(epochs[0]) == {item["index"] for item in items(record_one)[: 3 * GLOBAL_BATCH]}
    assert logged_losses(probed[2]["output"]) == pytest.approx(logged_losses(probed[1]["output"]), rel=1e-5)
    trained = {p: load_file(probed[p]["output"] / "model.safetensors") for p in (1, 2)}
    assert_close_updates(trained[2], trained[1], probed_head_start(data, probed), ["classifier.weight"], SGD_TOLERANCE)
    assert report(probed[2]["output"])["num_samples"] == VALIDATION_IMAGES
    assert_only_the_main_process_writes(record_two, probed[2]["output"])
    assert sorted(os.listdir(probed[2]["output"])) == sorted(os.listdir(probed[1]["output"]))


def probed_head_start(data, probed) -> dict:
    """The probe's head before training: both runs build it after seeding with the same seed."""
    from supmae.tasks import classification

    arguments = classification.parse(
        [*flags(model_name_or_path=data / "pretrained", mode="linprobe", output_dir=data / "unused"), *QUIET]
    )
    torch.manual_seed(3)
    model = classification.build_model(arguments[0], arguments[2], ["cat", "dog"])
    return {"classifier.weight": model.classifier.weight.detach().clone()}


@pytest.fixture(scope="module")
def evaluated(data, probed, tmp_path_factory):
    """--mode eval of the probe the two processes trained (it has BatchNorm statistics), in one process and in two."""
    root = tmp_path_factory.mktemp("eval")
    runs = {}
    for processes in (1, 2):
        record, output = root / f"record-{processes}", root / f"out-{processes}"
        arguments = flags(mode="eval", model_name_or_path=probed[2]["output"], train_dir=data / "train")
        arguments += [*flags(validation_dir=data / "val", output_dir=output), *CLASSIFY]
        run_job(record, "classification", arguments, processes)
        runs[processes] = dict(record=record, output=output)
    return runs


@pytest.mark.slow
def test_evaluation_under_two_processes_matches_one(evaluated, probed):
    """Each of the 5 images scored once (not 6, the even split's padding), the same metrics as one process; and the
    probe's own report, from its two training processes, is this evaluation of the weights it saved."""
    one, two = report(evaluated[1]["output"]), report(evaluated[2]["output"])
    assert one["num_samples"] == two["num_samples"] == VALIDATION_IMAGES
    assert (one["top1"], one["top5"]) == (two["top1"], two["top5"])
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-6)  # float32 rounding of other batchings only
    trained = report(probed[2]["output"])
    assert trained["top1"] == one["top1"] and trained["loss"] == pytest.approx(one["loss"], rel=1e-6)
    assert_only_the_main_process_writes(evaluated[2]["record"], evaluated[2]["output"])
    assert sorted(os.listdir(evaluated[2]["output"])) == sorted(os.listdir(evaluated[1]["output"]))


# --------------------------------------------------------------------------------------------------- segmentation
SEGMENTATION = [
    *QUIET,
    *flags(
        **TINY_SEGMENTATION,
        decode_channels=16,
        auxiliary_channels=8,
        learning_rate=2e-3,
        layer_decay=1.0,
        warmup_steps=0,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=1,
        max_steps=2,
        windows_per_batch=2,
    ),
]


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    """ADE20K's layout, 4 training and 5 validation images (24 x 16, classes 0..3, 0 ignored); 2 steps of 2 crops
    per process in two processes, then the sliding-window evaluation."""
    root = tmp_path_factory.mktemp("segmentation")
    write_ade20k_folder(root / "ade", counts={"training": 4, "validation": VALIDATION_IMAGES})
    record, output = root / "record", root / "out"
    arguments = [*SEGMENTATION, *flags(train_dir=root / "ade", output_dir=output, per_device_train_batch_size=2)]
    log = run_job(record, "segmentation", arguments, processes=2)
    return dict(root=root, record=record, output=output, arguments=arguments, log=log)


def one_process_confusion(segmented) -> torch.Tensor:
    """The validation set's confusion matrix of the saved model, evaluated here, in one process."""
    arguments = [*segmented["arguments"], *flags(output_dir=segmented["root"] / "here")]
    model_args, data_args, args = segmentation.parse(arguments)
    data = segmentation.prepare_data(data_args, args)
    validation = segmentation.build_datasets(data, data_args, args)["validation"]
    model = SupMAEUperNetForSemanticSegmentation.from_pretrained(segmented["output"])
    trainer = SupMAESegmentationTrainer(model=model, args=args, crop_size=32, stride=16, windows_per_batch=2)
    return trainer.confusion_matrix(validation)


@pytest.mark.slow
def test_segmentation_confusion_matrix_is_summed_over_processes_once(segmented):
    """The two processes' matrix (each process scores its own 3 or 2 images, the sum goes to both) counts every
    labelled pixel of the 5 validation annotations once (ADE20K's label 0 is ignored), and equals the matrix one
    process gets from the saved weights, pixel for pixel; so do the reported mIoU, mAcc and aAcc."""
    annotations = sorted((segmented["root"] / "ade" / "annotations" / "validation").iterdir())
    assert len(annotations) == VALIDATION_IMAGES
    labelled = sum(int((np.asarray(Image.open(path)) != 0).sum()) for path in annotations)
    matrices = [json.loads((segmented["record"] / f"rank-{r}-confusion-0.json").read_text()) for r in (0, 1)]
    assert matrices[0] == matrices[1]
    two = torch.tensor(matrices[0])
    assert two.shape == (150, 150) and int(two.sum()) == labelled  # ADE20K's 150 classes
    one = one_process_confusion(segmented)
    assert int(one.sum()) == labelled
    assert torch.equal(two, one)  # the same weights (BatchNorm statistics too), the same windows: the same argmax
    metrics = json.loads((segmented["output"] / "eval_validation.json").read_text())["metrics"]
    expected = metrics_from_confusion_matrix(one)
    for name in ("mean_iou", "mean_accuracy", "overall_accuracy"):
        assert metrics[f"eval_{name}"] == pytest.approx(expected[name], rel=1e-12), name
    assert_only_the_main_process_writes(segmented["record"], segmented["output"])
    assert (segmented["output"] / "model.safetensors").is_file()


# ------------------------------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize(
    "sharding",
    [
        ["--fsdp", "--fsdp_config", FSDP_CONFIG],
        ["--fsdp", "full_shard auto_wrap"],
        ["--deepspeed", '{"zero_optimization": {"stage": 3}}'],
        ["--deepspeed", "FILE"],
    ],
    ids=["fsdp-config", "fsdp-string", "zero3-json", "zero3-file"],
)
@pytest.mark.parametrize("cuda", [False, True], ids=["cpu", "cuda"])
def test_segmentation_refuses_sharded_parameters_on_any_back_end(sharding, cuda, tmp_path, monkeypatch):
    """Refused while the arguments are read, before the back end is set up (with a CUDA device claimed, and on
    the CPU, where the launch check would otherwise refuse --fsdp for another reason), and before anything is
    written."""
    if sharding[1] == "FILE":
        (tmp_path / "zero3.json").write_text(json.dumps({"zero_optimization": {"stage": 3, "overlap_comm": True}}))
        sharding = ["--deepspeed", str(tmp_path / "zero3.json")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    output = tmp_path / "out"
    argv = [*flags(config_name="vit-small-patch16", output_dir=output), *sharding]
    with pytest.raises(
        ValueError, match=r"run_segmentation.py cannot train with --(fsdp|deepspeed with ZeRO stage 3)"
    ):
        segmentation.main([*argv, *(["--use_cpu", "true"] if not cuda else [])])
    assert not output.exists()


def test_segmentation_takes_zero_stage_2():
    """ZeRO stages 1 and 2 keep whole parameters: not this check's business (the launch check and the deepspeed
    package decide)."""
    assert segmentation.deepspeed_zero_stage('{"zero_optimization": {"stage": 2}}') == 2
    segmentation.check_unsharded(None, '{"zero_optimization": {"stage": 2}}')
    segmentation.check_unsharded(None, {"zero_optimization": {"stage": 1}})
    with pytest.raises(ValueError, match="ZeRO stage 3"):
        segmentation.check_unsharded(None, {"zero_optimization": {"stage": 3}})


@pytest.mark.slow
def test_refusal_under_torchrun_comes_from_each_process(tmp_path):
    """A real 2-process launch of run_segmentation.py with --fsdp: each process prints the one paragraph and exits;
    no output folder is made."""
    output = tmp_path / "out"
    arguments = [*QUIET, *flags(config_name="vit-small-patch16"), "--fsdp", "--fsdp_config", FSDP_CONFIG]
    result = launch(tmp_path / "record", "segmentation", [*arguments, "--output_dir", output], processes=2)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    message = "run_segmentation.py cannot train with --fsdp"
    assert len(errors) == 2 and all(message in line for line in errors), result.stderr[-3000:]
    assert not output.exists()
    assert all(writes(tmp_path / "record", rank) == [] for rank in (0, 1))


# ------------------------------------------------------------------------------------------------------- transfer
TRANSFER_COLORS = [(220, 40, 40), (40, 200, 40), (40, 40, 220)]
# Logits of two processes against one, as a fraction of the largest logit of the prediction. The features differ
# by float32 rounding (images batched with others: under 1e-5), the probe's BatchNorm statistics by the float64 sums
# (`GlobalBatchNorm`) against BatchNorm's float32 ones, and momentum SGD carries that through the epochs.
TRANSFER_LOGITS_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def transfer_data(tmp_path_factory):
    """A 3-class color set (6 training and 4 test images per class), a tiny pretraining checkpoint and a suite of
    it with a 2-point grid."""
    root = tmp_path_factory.mktemp("transfer")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 6), ("test", 4)):
        for c, color in enumerate(TRANSFER_COLORS):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.clip(np.array(color, float) + rng.normal(0, 60, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    torch.manual_seed(0)
    SupMAEForPreTraining(tiny_config(num_labels=3)).save_pretrained(root / "pretrained")
    (root / "suite.yaml").write_text(
        "grid: {linprobe: {learning_rate: [0.03, 0.3]}, finetune: {learning_rate: [1.0e-3, 3.0e-3]}}\n"
        f"datasets: [{{name: colors, train: {root}/train, test: {root}/test, metric: accuracy}}]\n"
    )
    return root


def transfer_arguments(data, output, *extra) -> list[str]:
    suite = flags(suite=data / "suite.yaml", model_name_or_path=data / "pretrained", output_dir=output)
    # A batch of 4 for the whole run (2 per process under two): 9 training images of a grid point give 2 batches
    # an epoch (the 9th dropped), the 12 of the final training 3.
    batch = flags(per_device_train_batch_size=4, per_device_eval_batch_size=5, logging_steps=50, shots=4)
    return [*suite, *QUIET, *batch, *map(str, extra)]


@pytest.fixture(scope="module")
def transferred(transfer_data, tmp_path_factory):
    """The linear-probe suite (4 shots, seeds 0 and 1, 3 epochs per training) in one process and in two."""
    root = tmp_path_factory.mktemp("transferred")
    runs = {}
    for processes in (1, 2):
        record, output = root / f"record-{processes}", root / f"out-{processes}"
        extra = flags(mode="linprobe", num_train_epochs=3, warmup_epochs=1, seeds="0,1")
        log = run_job(record, "transfer", transfer_arguments(transfer_data, output, *extra), processes)
        runs[processes] = dict(record=record, output=output, log=log)
    return runs


def results(output) -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted((output / "results" / "colors").iterdir())}


def logits(record, rank=0) -> list[dict]:
    return [load_file(path) for path in sorted(record.glob(f"rank-{rank}-logits-*.safetensors"), key=record_number)]


def record_number(path) -> int:
    return int(path.stem.rsplit("-", 1)[1])


def folder_files(folder) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(top, name), folder) for top, _, names in os.walk(folder) for name in names
    )


def assert_only_the_main_process_writes_transfer(record, output) -> None:
    """As `assert_only_the_main_process_writes`, for the suite: process 0 wrote the records and the summary."""
    for write in writes(record, 1):
        probe = os.path.basename(write["path"]).startswith(".write-test-")
        assert write["path"] == str(output) or probe, f"process 1 wrote {write}"
    written = {os.path.relpath(w["path"], output) for w in writes(record, 0)}
    assert {"summary.json", "summary.md", "scores.png"} <= {os.path.basename(path) for path in written}


@pytest.mark.slow
def test_transfer_linear_probe_under_two_processes_matches_one(transferred):
    """Each run's held-out scores (grid point by grid point), chosen point and test score are one process's; so are
    the logits behind them, in both processes (each computes the same numbers), within TRANSFER_LOGITS_TOLERANCE
    of the largest logit (the scores of this easy set saturate; the logits are the check that the probe trained as
    in one process); the summary too."""
    one, two = results(transferred[1]["output"]), results(transferred[2]["output"])
    assert sorted(one) == sorted(two) == ["4-shot-seed-0.json", "4-shot-seed-1.json"]
    for name in one:
        assert two[name]["chosen"] == one[name]["chosen"], name
        assert two[name]["few_shot_indices"] == one[name]["few_shot_indices"]
        assert [p["learning_rate"] for p in two[name]["grid"]] == [0.03, 0.3]
        for first, second in zip(one[name]["grid"], two[name]["grid"], strict=True):
            assert second["holdout_score"] == pytest.approx(first["holdout_score"], abs=1e-9), name
        assert two[name]["metrics"]["score"] == pytest.approx(one[name]["metrics"]["score"], abs=1e-9), name
        assert two[name]["num_test"] == one[name]["num_test"] == 12
    reference = logits(transferred[1]["record"])
    assert len(reference) == 2 * 3  # per seed: the held-out images under 2 grid points, then the test split
    for rank in (0, 1):
        predictions = logits(transferred[2]["record"], rank)
        assert len(predictions) == len(reference)
        for got, expected in zip(predictions, reference, strict=True):
            assert torch.equal(got["targets"], expected["targets"])
            scale = expected["logits"].abs().max().item()
            torch.testing.assert_close(
                got["logits"], expected["logits"], rtol=0, atol=TRANSFER_LOGITS_TOLERANCE * scale
            )
    summary = [json.loads((transferred[p]["output"] / "summary.json").read_text())["metrics"] for p in (1, 2)]
    runs = [summary[p]["datasets"]["colors"]["shots"]["4"]["runs"] for p in (0, 1)]
    assert len(runs[0]) == 2 and runs[1] == pytest.approx(runs[0], abs=1e-7)


@pytest.mark.slow
def test_transfer_processes_see_each_few_shot_image_once_per_epoch(transferred):
    """Per training (2 grid points, then the chosen one, per seed: 6) and epoch (3), the two processes fetched
    disjoint halves of what one process fetched: 2 global batches of 4 of the 9 grid-search images, 3 of the 12."""
    two, one = ([item for rank in range(p) for item in items(transferred[p]["record"], rank)] for p in (2, 1))
    assert {item["run"] for item in one} == set(range(6))
    for run in range(6):
        for epoch in range(3):
            mine = {
                rank: [
                    i["index"] for i in items(transferred[2]["record"], rank) if (i["run"], i["epoch"]) == (run, epoch)
                ]
                for rank in (0, 1)
            }
            theirs = [i["index"] for i in one if (i["run"], i["epoch"]) == (run, epoch)]
            expected = 12 if run % 3 == 2 else 8
            assert len(theirs) == len(set(theirs)) == expected, (run, epoch)
            assert len(mine[0]) == len(mine[1]) == expected // 2, (run, epoch, mine)
            assert not set(mine[0]) & set(mine[1]) and set(mine[0]) | set(mine[1]) == set(theirs), (run, epoch)
    assert len(two) == len(one)


@pytest.mark.slow
def test_transfer_is_written_by_the_main_process_only(transferred):
    """The two-process folder holds the files of the one-process one (records, summary, figure, the run's files),
    and only process 0 wrote any of it."""
    one, two = (transferred[p]["output"] for p in (1, 2))
    assert folder_files(two) == folder_files(one)
    assert "results/colors/4-shot-seed-1.json" in folder_files(two)
    assert_only_the_main_process_writes_transfer(transferred[2]["record"], two)


# Logits of two processes against one, as a fraction of the largest logit: the global batch is the same, so only the
# order of float32 sums differs (measured: 2e-7). A training whose gradients were reduced twice (a model trained again
# after DistributedDataParallel wrapped it) was off by 0.5.
TRANSFER_FINETUNE_LOGITS_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def fine_tuned_transfer(transfer_data, tmp_path_factory):
    """The fine-tuning suite (4 shots, seed 0, 2 epochs per training), without the draws that depend on the batch's
    process (mixup / CutMix pairs, drop path's masks), in one process and in two."""
    root = tmp_path_factory.mktemp("fine-tuned-transfer")
    runs = {}
    for processes in (1, 2):
        record, output = root / f"record-{processes}", root / f"out-{processes}"
        extra = flags(mode="finetune", num_train_epochs=2, warmup_epochs=1, seeds="0", mixup=0, cutmix=0)
        extra += flags(drop_path_rate=0, auto_augment="none", reprob=0)
        log = run_job(record, "transfer", transfer_arguments(transfer_data, output, *extra), processes)
        runs[processes] = dict(record=record, output=output, log=log)
    return runs


@pytest.mark.slow
def test_transfer_fine_tuning_under_two_processes_matches_one(fine_tuned_transfer):
    """As the probe's test, for --mode finetune: the same grid choice and scores, and logits within
    TRANSFER_FINETUNE_LOGITS_TOLERANCE of the largest; each image fetched once per epoch; only process 0 writes."""
    one, two = (results(fine_tuned_transfer[p]["output"]) for p in (1, 2))
    assert sorted(one) == sorted(two) == ["4-shot-seed-0.json"]
    record = "4-shot-seed-0.json"
    assert two[record]["chosen"] == one[record]["chosen"]
    assert two[record]["metrics"]["score"] == pytest.approx(one[record]["metrics"]["score"], abs=1e-9)
    reference = logits(fine_tuned_transfer[1]["record"])
    assert len(reference) == 3  # the held-out images under 2 grid points, then the test split
    for rank in (0, 1):
        for got, expected in zip(logits(fine_tuned_transfer[2]["record"], rank), reference, strict=True):
            assert torch.equal(got["targets"], expected["targets"])
            scale = expected["logits"].abs().max().item()
            torch.testing.assert_close(
                got["logits"], expected["logits"], rtol=0, atol=TRANSFER_FINETUNE_LOGITS_TOLERANCE * scale
            )
    fetched = {
        p: [item for rank in range(p) for item in items(fine_tuned_transfer[p]["record"], rank)] for p in (1, 2)
    }
    for run, epoch in {(i["run"], i["epoch"]) for i in fetched[1]}:
        mine = [
            [i["index"] for i in items(fine_tuned_transfer[2]["record"], r) if (i["run"], i["epoch"]) == (run, epoch)]
            for r in (0, 1)
        ]
        theirs = [i["index"] for i in fetched[1] if (i["run"], i["epoch"]) == (run, epoch)]
        assert not set(mine[0]) & set(mine[1]) and sorted(mine[0] + mine[1]) == sorted(theirs), (run, epoch)
    assert folder_files(fine_tuned_transfer[2]["output"]) == folder_files(fine_tuned_transfer[1]["output"])
    assert_only_the_main_process_writes_transfer(fine_tuned_transfer[2]["record"], fine_tuned_transfer[2]["output"])
