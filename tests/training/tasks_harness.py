"""A task's `main` (classification, segmentation or transfer), instrumented for
tests/training/test_tasks_under_two_processes.py: it records, for each process, the training items it fetched and
every change it made under the run's --output_dir. It runs as the scripts do, with a record directory and the task
as its first arguments:

    torchrun --standalone --nproc_per_node 2 tests/training/tasks_harness.py RECORD_DIR TASK [script arguments]
    python tests/training/tasks_harness.py RECORD_DIR TASK [script arguments]                  # one process

TASK is classification, segmentation or transfer. For the process of global rank N it writes:
- RECORD_DIR/rank-N-items.jsonl: one line per training item fetched, `{"epoch": the training set's epoch,
  "index": the item's index}` (the image dataset of fine-tuning, or the cached features of a linear probe);
- RECORD_DIR/rank-N-features-K.safetensors: the K-th cached feature set the process built (linear probing with
  --cache_features: 0 the training set's, 1 the validation set's), as FeatureDataset received it;
- RECORD_DIR/rank-N-confusion-K.json: the K-th confusion matrix segmentation's evaluation returned (summed over the
  processes), as a list of rows;
- transfer: the items' lines also carry `"run"`, the K-th training set the process built (one per training of
  the suite: each grid point's, then the chosen one's, per (dataset, shots, seed)), and RECORD_DIR/rank-N-logits-K
  .safetensors holds the K-th `FewShotRunner.predict`'s logits and targets (the held-out images', grid point by grid
  point, then the test split's, per run);
- RECORD_DIR/rank-N-writes.jsonl: one line per file operation under --output_dir that the process asked Python for
  (`open` for writing, rename/replace, remove, mkdir), from the interpreter's audit events, `{"event", "path"}`,
  written when the process ends, also after an error.

Nothing else changes: the same script, data, model and Trainer."""

import json
import os
import sys

import torch
from safetensors.torch import save_file

from supmae.cli import run_script
from supmae.data import datasets as data_datasets
from supmae.tasks import classification, segmentation, transfer


RECORD_DIR, OUTPUT_DIR, WRITES, COUNTS = "", "", [], {"features": 0, "confusion": 0, "logits": 0, "runs": 0}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def rank() -> str:
    return os.environ.get("RANK", "0")


def append_line(suffix: str, line: str) -> None:
    with open(os.path.join(RECORD_DIR, f"rank-{rank()}{suffix}"), "a") as file:
        file.write(line + "\n")


def under_output(path) -> bool:
    if not isinstance(path, str | bytes | os.PathLike):
        return False
    path = os.path.abspath(os.fsdecode(path))
    return path == OUTPUT_DIR or path.startswith(OUTPUT_DIR + os.sep)


def audit(event: str, arguments: tuple) -> None:
    """Every write Python makes under the output directory: `open` in a writing mode (builtins.open passes its mode,
    os.open its flags), renames (os.rename and os.replace), removals and new folders."""
    if event == "open" and len(arguments) >= 3 and under_output(arguments[0]):
        mode, flags = arguments[1], arguments[2]
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITE_FLAGS)
        if writing:
            WRITES.append({"event": "open", "path": os.fsdecode(arguments[0])})
    elif event == "os.rename" and (under_output(arguments[0]) or under_output(arguments[1])):
        WRITES.append({"event": event, "path": os.fsdecode(arguments[1])})
    elif event in ("os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree") and under_output(arguments[0]):
        WRITES.append({"event": event, "path": os.fsdecode(arguments[0])})


def recording(dataset_class):
    """`dataset_class` whose items are recorded as they are fetched, with the epoch (`set_epoch`) they belong to."""

    class Recorded(dataset_class):
        def __getitem__(self, index):
            line = {"epoch": getattr(self, "epoch", None), "index": int(index)}
            if getattr(self, "run", None) is not None:  # transfer's training sets (`counting_runs`)
                line["run"] = self.run
            append_line("-items.jsonl", json.dumps(line))
            return super().__getitem__(index)

        def set_epoch(self, epoch):
            self.epoch = int(epoch)
            if hasattr(super(), "set_epoch"):
                super().set_epoch(epoch)

    Recorded.__name__ = dataset_class.__name__
    return Recorded


def next_record(kind: str, extension: str) -> str:
    path = os.path.join(RECORD_DIR, f"rank-{rank()}-{kind}-{COUNTS[kind]}.{extension}")
    COUNTS[kind] += 1
    return path


class RecordedFeatures(recording(data_datasets.FeatureDataset)):
    def __init__(self, cache):
        save_file({key: value.contiguous() for key, value in cache.items()}, next_record("features", "safetensors"))
        super().__init__(cache)


def counting_runs(dataset_class):
    """`recording(dataset_class)` that numbers the training sets as they are built (their items' `"run"`)."""

    class Counted(recording(dataset_class)):
        def __init__(self, *arguments, **options):
            self.run = COUNTS["runs"]
            COUNTS["runs"] += 1
            super().__init__(*arguments, **options)

    Counted.__name__ = dataset_class.__name__
    return Counted


class RecordingFewShotRunner(transfer.FewShotRunner):
    def predict(self, model, indices):
        logits, targets = super().predict(model, indices)
        save_file(
            {"logits": torch.as_tensor(logits), "targets": torch.as_tensor(targets)},
            next_record("logits", "safetensors"),
        )
        return logits, targets


class RecordingSegmentationTrainer(segmentation.SupMAESegmentationTrainer):
    def confusion_matrix(self, dataset):
        confusion = super().confusion_matrix(dataset)
        with open(next_record("confusion", "json"), "w") as file:
            json.dump(confusion.tolist(), file)
        return confusion


TASKS = {"classification": classification.main, "segmentation": segmentation.main, "transfer": transfer.main}


def output_dir_of(argv: list[str]) -> str:
    return os.path.abspath(argv[argv.index("--output_dir") + 1]) if "--output_dir" in argv else os.path.abspath("-")


def main(argv: list[str]) -> None:
    global RECORD_DIR, OUTPUT_DIR
    RECORD_DIR, task, script_arguments = argv[0], argv[1], argv[2:]
    OUTPUT_DIR = output_dir_of(script_arguments)
    os.makedirs(RECORD_DIR, exist_ok=True)
    # The training sets of fine-tuning (images) and of the cached linear probe (features); evaluation sets are built
    # elsewhere (supmae.tasks.evaluation_sets) and stay as they are.
    classification.TransformedImageDataset = recording(data_datasets.TransformedImageDataset)
    classification.FeatureDataset = RecordedFeatures
    segmentation.SupMAESegmentationTrainer = RecordingSegmentationTrainer
    transfer.FeatureDataset = counting_runs(data_datasets.FeatureDataset)
    transfer.TransformedImageDataset = counting_runs(data_datasets.TransformedImageDataset)
    transfer.FewShotRunner = RecordingFewShotRunner
    sys.addaudithook(audit)
    try:
        run_script(TASKS[task], script_arguments)
    finally:
        with open(os.path.join(RECORD_DIR, f"rank-{rank()}-writes.jsonl"), "w") as file:
            file.writelines(json.dumps(write) + "\n" for write in WRITES)


if __name__ == "__main__":
    main(sys.argv[1:])
