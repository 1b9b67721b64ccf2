# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
Few-shot transfer over many datasets with ELEVATER's protocol (Li et al., "ELEVATER: A Benchmark and Toolkit for
Evaluating Language-Augmented Visual Models", NeurIPS 2022; the SupMAE paper's few-shot table):

- K images per class drawn by the seed (`few_shot_split`);
- 20% of the few-shot set held out to choose the learning rate and weight decay from a small grid, then training on
  all K per class with the choice (`run_few_shot`);
- the test split scored with the dataset's metric (accuracy, mean per class, 11-point mAP, ROC-AUC);
- one JSON record per (dataset, shots, seed), written as soon as it exists, so that a killed suite resumes at the
  first (dataset, shots, seed) without one (`run_suite`); then a summary (JSON, Markdown, a plot).

The suite file (YAML) lists the datasets (`load_suite`); run_transfer.py is the command (`main`).
"""

import copy
import dataclasses
import io
import json
import logging
import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import transformers
import yaml
from datasets import ClassLabel
from transformers import default_data_collator

from ..cli import command_of, configure_logging, given_names
from ..data.collators import MixupCollator, TransferCollator
from ..data.datasets import FeatureDataset, TransformedImageDataset
from ..data.few_shot import few_shot_split
from ..data.images import SKIPPED_IMAGES, BadImagePolicy
from ..data.sources import class_names, load_labelled_split
from ..data.transforms import eval_image_processor
from ..metrics import TRANSFER_METRICS, summarize_runs, transfer_score
from ..reports.score_plot import plot_scores
from ..training.classification import FeatureProbe, extract_features, scored_features, scored_rows
from ..training.files import MAX_NAME_LENGTH, path_inside, path_name_problem, write_report, write_text
from ..training.optim import effective_batch_size
from ..training.runs import RunDirectory, run_recipe
from ..training.transfer import GlobalBatchNorm, TransferTrainer
from . import classification
from .classification import build_model, optimizer_for, train_transform, training_schedule
from .evaluation_sets import evaluation_set


logger = logging.getLogger(__name__)


SOURCE_KEYS = ("source", "split", "config", "image_column", "label_column")


DATASET_KEYS = ("name", "train", "test", "metric")


SUITE_KEYS = ("datasets", "grid", "holdout_fraction")


GRID_KEYS = ("learning_rate", "weight_decay")


MAX_SUITE_FILE_BYTES = 1_048_576  # 1 MiB; ELEVATER's 20 datasets take 3 kB (suites/elevater.yaml)


MAX_SHOWN_CHARACTERS = 200  # of a value from the file quoted in an error message


class SuiteLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases (`*name`). An alias repeats the node its anchor names without copying it
    in the file: a few hundred bytes of nested aliases expand to gigabytes ("billion laughs"). Without them a
    suite's size is bounded by its file's."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None,
                None,
                "found an alias (*name): suite files may not use YAML aliases",
                self.peek_event().start_mark,
            )
        return super().compose_node(parent, index)


def shown(value, limit: int = MAX_SHOWN_CHARACTERS) -> str:
    """`repr(value)` cut to `limit` characters, for error messages that quote the file."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_suite_file(path: str):
    """A suite file's YAML, parsed with `SuiteLoader` once its size (at most `MAX_SUITE_FILE_BYTES`) and encoding
    (UTF-8) are checked; every failure a ValueError naming the file, in one short paragraph."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"The suite file {path} does not exist.")
    size = os.path.getsize(path)
    if size > MAX_SUITE_FILE_BYTES:
        raise ValueError(
            f"The suite file {path} is {size:,} bytes; a suite file lists datasets in at most "
            f"MAX_SUITE_FILE_BYTES = {MAX_SUITE_FILE_BYTES:,} bytes. Is it the right file?"
        )
    with open(path, "rb") as file:
        data = file.read(MAX_SUITE_FILE_BYTES + 1)
    try:
        text = io.StringIO(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"The suite file {path} is not UTF-8 text (byte {error.start}).") from None
    text.name = path  # for the line numbers of YAML's errors
    try:
        return yaml.load(text, Loader=SuiteLoader)  # a SafeLoader, without aliases
    except yaml.YAMLError as error:
        reason = " ".join(str(error).split())
        raise ValueError(f"{path} is not valid YAML: {reason[:MAX_SHOWN_CHARACTERS]}") from None


# The learning rates and weight decays tried when the suite names none (the optimizer's peak lr, as ELEVATER's grid).
DEFAULT_GRIDS = {
    "linprobe": {"learning_rate": [0.01, 0.1, 1.0], "weight_decay": [0.0]},
    "finetune": {"learning_rate": [1e-4, 3e-4, 1e-3], "weight_decay": [0.05]},
}


@dataclass
class DataSource:
    """One split of a Hub dataset, a local dataset directory or an image folder."""

    source: str
    split: str | None = None
    config: str | None = None
    image_column: str | None = None
    label_column: str | None = None

    def load(self, cache_dir=None, bad_images=None):
        """The split, its image column and its label column."""
        return load_labelled_split(
            self.source,
            self.split,
            self.config,
            cache_dir,
            self.image_column,
            self.label_column,
            bad_images=bad_images,
        )


@dataclass
class SuiteDataset:
    name: str
    train: DataSource
    test: DataSource
    metric: str

    @property
    def multi_label(self) -> bool:
        """11-point mAP datasets (VOC 2007) are multi-label: sigmoid scores, binary cross-entropy."""
        return self.metric == "11point_mAP"


@dataclass
class Suite:
    path: str
    datasets: list[SuiteDataset]
    grid: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # mode -> {learning_rate, weight_decay}
    holdout_fraction: float = 0.2

    def grid_for(self, mode: str) -> list[dict[str, float]]:
        """The (learning_rate, weight_decay) points tried for `mode`, in order."""
        grid = {**DEFAULT_GRIDS[mode], **self.grid.get(mode, {})}
        return [
            {"learning_rate": lr, "weight_decay": wd} for lr in grid["learning_rate"] for wd in grid["weight_decay"]
        ]


def _source(value, where: str) -> DataSource:
    if isinstance(value, str):
        return DataSource(value)
    if not isinstance(value, dict) or "source" not in value:
        raise ValueError(
            f"{where} must be a source (a path or Hub dataset) or a mapping with 'source' and optional "
            f"{list(SOURCE_KEYS[1:])}; got {shown(value)}."
        )
    unknown = sorted(set(value) - set(SOURCE_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown keys {shown(unknown)}; allowed: {list(SOURCE_KEYS)}.")
    for key, v in value.items():
        if not (isinstance(v, str) and v) and not (v is None and key != "source"):
            raise ValueError(f"{where}: '{key}' must be a non-empty string, got {shown(v)}.")
    return DataSource(**value)


def _numbers(value, where: str) -> list[float]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < math.inf for v in values
    ):
        raise ValueError(f"{where} must be a non-negative number or a list of them, got {shown(value)}.")
    return [float(v) for v in values]


def load_suite(path: str) -> Suite:
    """Read and check a suite file; every mistake is an error naming the file, the entry and the field."""
    content = read_suite_file(path)
    if not isinstance(content, dict) or not isinstance(content.get("datasets"), list) or not content["datasets"]:
        raise ValueError(f"{path} must be a mapping with a non-empty list 'datasets'.")
    unknown = sorted(set(content) - set(SUITE_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {shown(unknown)}; allowed: {list(SUITE_KEYS)}.")
    datasets, names = [], set()
    for i, entry in enumerate(content["datasets"]):
        where = f"{path}: datasets[{i}]" + (
            f" ({str(entry['name'])[:MAX_SHOWN_CHARACTERS]})" if isinstance(entry, dict) and "name" in entry else ""
        )
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be a mapping with {list(DATASET_KEYS)}.")
        missing, unknown = [k for k in DATASET_KEYS if k not in entry], sorted(set(entry) - set(DATASET_KEYS))
        if missing or unknown:
            raise ValueError(
                f"{where}: "
                + (f"missing {missing}" if missing else f"unknown keys {shown(unknown)}")
                + f"; each dataset has {list(DATASET_KEYS)}."
            )
        name = entry["name"]
        problem = path_name_problem(name) or ("an earlier dataset has it" if name in names else None)
        if problem:
            raise ValueError(
                f"{where}: 'name' must be a unique string that is a single file name (it names the dataset's results "
                f"folder: printable, at most {MAX_NAME_LENGTH} characters, no '/' or '\\', not '.' or '..'), got "
                f"{shown(name)}: {problem}."
            )
        if entry["metric"] not in TRANSFER_METRICS:
            raise ValueError(
                f"{where}: 'metric' must be one of {list(TRANSFER_METRICS)}, got {shown(entry['metric'])}."
            )
        names.add(name)
        datasets.append(
            SuiteDataset(
                name,
                _source(entry["train"], f"{where}: train"),
                _source(entry["test"], f"{where}: test"),
                entry["metric"],
            )
        )
    grid = content.get("grid") or {}
    if not isinstance(grid, dict) or not set(grid) <= set(DEFAULT_GRIDS):
        raise ValueError(
            f"{path}: 'grid' maps a mode ({list(DEFAULT_GRIDS)}) to {list(GRID_KEYS)}; got {shown(grid)}."
        )
    for mode, points in grid.items():
        if not isinstance(points, dict) or not set(points) <= set(GRID_KEYS):
            raise ValueError(f"{path}: grid.{mode} takes {list(GRID_KEYS)}; got {shown(points)}.")
        grid[mode] = {key: _numbers(value, f"{path}: grid.{mode}.{key}") for key, value in points.items()}
    holdout = content.get("holdout_fraction", 0.2)
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0 < holdout < 1:
        raise ValueError(f"{path}: 'holdout_fraction' must be a number in (0, 1), got {shown(holdout)}.")
    return Suite(path, datasets, grid, float(holdout))


@dataclass
class TransferData:
    """A suite dataset, loaded: its splits, columns and classes."""

    entry: SuiteDataset
    train: object
    test: object
    image_column: str
    label_column: str
    test_image_column: str
    test_label_column: str
    names: list[str]

    @classmethod
    def load(cls, entry: SuiteDataset, cache_dir=None, bad_images=None) -> "TransferData":
        splits = []
        for split, source in (("train", entry.train), ("test", entry.test)):
            try:
                splits.append(source.load(cache_dir, bad_images))
            except (ValueError, OSError) as error:  # the loader's message, placed in the suite
                raise ValueError(f"Suite dataset {entry.name!r}, {split} ({source.source}): {error}") from error
        (train, image_column, label_column), (test, test_image_column, test_label_column) = splits
        train, test = encode_string_labels(entry.name, train, label_column, test, test_label_column)
        # The label column alone: a row would decode its image inside datasets, unnamed if it cannot be read.
        multi_label = len(train) > 0 and isinstance(train.select_columns([label_column])[0][label_column], list)
        if multi_label != entry.multi_label:
            wanted = "single-label data: multi-label data takes 11point_mAP" if multi_label else "multi-label data"
            raise ValueError(
                f"Suite dataset {entry.name!r}: its labels (column {label_column!r}) are "
                f"{'lists' if multi_label else 'single classes'}, and metric {entry.metric!r} scores "
                f"{wanted}."
            )
        names = label_names(train, label_column)
        test_names = label_names(test, test_label_column)
        if names and test_names and names != test_names:
            raise ValueError(
                f"{entry.name}: the train and test splits name their classes differently "
                f"({names[:5]}... vs {test_names[:5]}...)."
            )
        if not names:
            labels = [
                c
                for split, column in ((train, label_column), (test, test_label_column))
                for value in split[column]
                for c in (value if isinstance(value, list) else [value])
            ]
            names = [str(i) for i in range(max(labels) + 1)]
        if entry.metric == "roc_auc" and len(names) != 2:
            raise ValueError(f"{entry.name}: roc_auc scores binary problems; the data has {len(names)} classes.")
        return cls(entry, train, test, image_column, label_column, test_image_column, test_label_column, names)

    def labels(self) -> list:
        return list(self.train[self.label_column])


def encode_string_labels(name: str, train, label_column: str, test, test_label_column: str):
    """Class names given as strings become class indices: the train split's names, sorted; the test split is mapped
    through the same names, and a test name that train lacks is an error naming it."""
    feature = (train.features or {}).get(label_column)
    if getattr(feature, "dtype", None) not in ("string", "large_string"):
        return train, test
    names = sorted(set(train[label_column]))
    unknown = sorted(set(test[test_label_column]) - set(names))
    if unknown:
        raise ValueError(f"Suite dataset {name!r}: the test split has classes that train lacks: {unknown[:5]}.")
    classes = ClassLabel(names=names)
    return train.cast_column(label_column, classes), test.cast_column(test_label_column, classes)


def label_names(dataset, label_column) -> list[str] | None:
    """Class names of a ClassLabel column or of a list-of-ClassLabel (multi-label) column."""
    names = class_names(dataset, label_column)
    feature = (dataset.features or {}).get(label_column)
    inner = getattr(feature, "feature", None) or (feature[0] if isinstance(feature, list) and feature else None)
    return names or (list(inner.names) if hasattr(inner, "names") else None)


def run_arguments(args, output_dir: str, point: dict[str, float], train_size: int):
    """The TrainingArguments of one training: the grid point's learning rate and weight decay, MAE's warmup (in
    epochs) and cosine floor, no checkpoints (a run is short; the suite resumes run by run), and the batch
    (`run_batch`), split evenly across the processes."""
    batch = run_batch(args, train_size)
    schedule, _ = training_schedule(args, batch)  # warmup and the cosine's floor, as run_classification.py sets them
    schedule.update(learning_rate=point["learning_rate"], weight_decay=point["weight_decay"])
    return dataclasses.replace(
        args,
        output_dir=output_dir,
        per_device_train_batch_size=batch // args.world_size,
        save_strategy="no",
        eval_strategy="no",
        **schedule,
    )


def run_batch(args, train_size: int) -> int:
    """The batch of one training, over all processes: --per_device_train_batch_size is the suite's batch whatever the
    number of processes (one process's batch), no larger than the few-shot set (the probe's BatchNorm and mixup need
    full batches), at least 2; under N processes rounded down to a multiple of N, so that each process takes an
    equal share (of 2N with mixup or CutMix, which pair images within a process's share). So N processes train on
    the batches one process does whenever the batch divides by N (or 2N)."""
    mixing = args.mode == "finetune" and (args.mixup > 0 or args.cutmix > 0)
    step = args.world_size * (2 if mixing else 1)
    batch = min(args.per_device_train_batch_size, train_size)
    return max(batch - batch % step, 2, step)


class FewShotRunner:
    """
    Trains and scores the runs of one dataset, with the model loaded once: each run starts from a copy of its
    initial weights (the pretrained encoder and one fresh head, the same for every run). Linear probing also encodes
    the images once (evaluation transform): the test split and every few-shot image that a run needs; each run then
    trains the head on those features. Fine-tuning trains the whole model on augmented images.
    """

    def __init__(self, data: TransferData, model_args, args, bad_images: BadImagePolicy, work_dir: str):
        self.data, self.args, self.bad_images, self.work_dir = data, args, bad_images, work_dir
        self.multi_label = data.entry.multi_label
        self.collator = TransferCollator(len(data.names), self.multi_label)
        # The fresh head is drawn from --seed: the same in every process and whatever ran before (a resumed suite
        # skips the datasets that are done, and a multi-process run draws numbers setting up its processes).
        transformers.set_seed(args.seed)
        self.model = build_model(model_args, args, data.names)
        if self.multi_label:
            self.model.config.problem_type = "multi_label_classification"
        # Linear probing changes only the head (and its BatchNorm statistics): only those need restoring. Fine-tuning
        # trains a copy of the model (`train`), which stays as loaded.
        self.initial = {
            name: value.clone()
            for name, value in self.model.state_dict().items()
            if name.startswith(("classifier.", "batch_norm."))
        }
        size = self.model.config.image_size
        self.image_size = size if isinstance(size, int) else size[0]
        self.encoded = {}  # linprobe: train index -> (feature (D,), target); the test split's as `test_encoded`

    def _images(self, split, image_column, label_column, indices=None):
        split = split if indices is None else split.select(indices)
        return evaluation_set(
            split, image_column, label_column, eval_image_processor(self.image_size), bad_images=self.bad_images
        )

    def encode(self, train_indices: list[int]) -> None:
        """Linear probing: the features of the test split and of the training images `train_indices`, the unreadable
        ones left out (`self.encoded` has no entry for them)."""
        args = dataclasses.replace(self.args, output_dir=self.work_dir)
        data = self.data
        train = extract_features(
            self.model,
            self._images(data.train, data.image_column, data.label_column, train_indices),
            args,
            self.collator,
        )
        rows = zip(train_indices, train["features"], train["labels"], scored_rows(train["labels"]), strict=True)
        self.encoded = {index: (feature, target) for index, feature, target, scored in rows if scored}
        test = self._images(data.test, data.test_image_column, data.test_label_column)
        self.test_encoded = scored_features(extract_features(self.model, test, args, self.collator))

    def train(self, indices: list[int], point: dict[str, float], seed: int):
        """A model trained on the training images `indices` with the grid point's hyper-parameters, from the initial
        weights: linear probing resets the head of the runner's model and trains it; fine-tuning trains a copy."""
        transformers.set_seed(seed)
        self.model.load_state_dict(self.initial, strict=False)
        if self.args.mode == "linprobe":  # the images that were read
            indices = [i for i in indices if i in self.encoded]
        args = run_arguments(self.args, self.work_dir, point, len(indices))
        optimizer = optimizer_for(args, effective_batch_size(args))[0]
        options = dict(
            optimizer_name=optimizer,
            layer_decay=args.layer_decay,
            label_smoothing=0.0 if self.multi_label else args.label_smoothing,
            multi_label=self.multi_label,
        )
        data = self.data
        if args.mode == "linprobe":
            features = FeatureDataset(
                {
                    "features": torch.stack([self.encoded[i][0] for i in indices]),
                    "labels": torch.stack([self.encoded[i][1] for i in indices]),
                }
            )
            batch_norm = self.model.batch_norm
            if args.world_size > 1 and batch_norm is not None:  # statistics of the whole batch, as in one process
                self.model.batch_norm = GlobalBatchNorm(batch_norm)
            try:
                TransferTrainer(
                    model=FeatureProbe(self.model),
                    args=args,
                    train_dataset=features,
                    data_collator=default_data_collator,
                    **options,
                ).train()
            finally:
                self.model.batch_norm = batch_norm
            return self.model
        transform = train_transform(args, self.image_size, eval_image_processor(self.image_size))
        images = TransformedImageDataset(
            data.train.select(indices), data.image_column, data.label_column, transform, seed, self.bad_images
        )
        mixing = not self.multi_label and (args.mixup > 0 or args.cutmix > 0)
        collator = (
            MixupCollator(len(data.names), args.mixup, args.cutmix, args.label_smoothing)
            if mixing
            else (self.collator)
        )
        # A copy per training: under several processes the Trainer wraps its model in DistributedDataParallel, whose
        # gradient hooks would stay on a model trained again and reduce the next training's gradients twice.
        model = copy.deepcopy(self.model)
        trainer = TransferTrainer(model=model, args=args, train_dataset=images, data_collator=collator, **options)
        trainer.eval_data_collator = self.collator
        trainer.train()
        return model

    def predict(self, model, indices: list[int] | None) -> tuple[np.ndarray, np.ndarray]:
        """(N, C) logits of the training images `indices` (the held-out part), or of the test split (None), and
        their targets, N the images that could be read: no image is scored in an unreadable one's place."""
        data = self.data
        if self.args.mode == "linprobe":
            if indices is None:
                features, targets = self.test_encoded["features"], self.test_encoded["labels"]
            else:
                indices = [i for i in indices if i in self.encoded]
                features = torch.stack([self.encoded[i][0] for i in indices])
                targets = torch.stack([self.encoded[i][1] for i in indices])
            device = next(model.parameters()).device  # the features are on the CPU, the model where Trainer put it
            model.eval()
            with torch.no_grad():
                logits = [model.classify(chunk.to(device)).float().cpu() for chunk in features.split(1024)]
            return torch.cat(logits).numpy(), targets.numpy()
        images = (
            self._images(data.test, data.test_image_column, data.test_label_column)
            if indices is None
            else self._images(data.train, data.image_column, data.label_column, indices)
        )
        evaluator = TransferTrainer(
            model=model,
            args=dataclasses.replace(self.args, output_dir=self.work_dir),
            data_collator=self.collator,
            multi_label=self.multi_label,
        )
        prediction = evaluator.predict(images)
        scored = scored_rows(prediction.label_ids).numpy()
        return prediction.predictions[scored], prediction.label_ids[scored]

    def score(self, model, indices: list[int] | None) -> tuple[float, int]:
        """The metric on the images `indices` (or the test split), and how many of them it scored."""
        logits, targets = self.predict(model, indices)
        return transfer_score(self.data.entry.metric, logits, targets), len(targets)

    def run(self, shots: int, seed: int, grid: list[dict], holdout_fraction: float) -> dict:
        """One (shots, seed): the grid searched on the held-out part, then all K per class with the choice, scored on
        the test split."""
        labels = self.data.labels()
        train, held_out = few_shot_split(labels, shots, seed, holdout_fraction)
        every = sorted(train + held_out)
        short = {}  # the classes with fewer than `shots` images, which ELEVATER's draw gives all of theirs
        if not isinstance(labels[0], (list, tuple)):
            classes, counts = np.unique(np.asarray(labels)[every], return_counts=True)
            short = {int(c): int(n) for c, n in zip(classes, counts, strict=True) if n < shots}
            if short:
                logger.warning(
                    f"{self.data.entry.name} {shots}-shot: {len(short)} classes have fewer images and "
                    f"give all they have ({min(short.values())} to {max(short.values())})."
                )
        searched = []
        if len(grid) > 1 and not held_out:
            logger.warning(
                f"{self.data.entry.name} {shots}-shot: no image to hold out; the grid's first point is used."
            )
        if len(grid) > 1 and held_out:
            for point in grid:
                searched.append({**point, "holdout_score": self.score(self.train(train, point, seed), held_out)[0]})
                logger.info(
                    f"{self.data.entry.name} {shots}-shot seed {seed}: {point} -> held-out "
                    f"{searched[-1]['holdout_score']:.4f}"
                )
        chosen = max(searched, key=lambda s: s["holdout_score"]) if searched else {**grid[0]}  # first of equals
        chosen = {key: chosen[key] for key in ("learning_rate", "weight_decay")}
        score, num_test = self.score(self.train(every, chosen, seed), None)
        return {
            "score": score,
            "chosen": chosen,
            "grid": searched,
            "num_few_shot": len(every),
            "num_held_out": len(held_out),
            "num_test": num_test,  # the test images scored: those that could be read
            "classes_with_fewer_images": short,
            "few_shot_indices": every,
        }


def result_path(output_dir: str, dataset: str, shots: int, seed: int) -> str:
    return path_inside(output_dir, "results", dataset, f"{shots}-shot-seed-{seed}.json")


def run_settings(suite: Suite, entry: SuiteDataset, model_args, args) -> dict:
    """What a result depends on: the dataset's entry in the suite (its data and metric), the suite's grid and held-out
    fraction, and the run's recipe (`run_recipe`: every option that can change the trained weights). A record made
    with other settings must not be mixed into this suite's table."""
    return {
        "metric": entry.metric,
        "train": dataclasses.asdict(entry.train),
        "test": dataclasses.asdict(entry.test),
        "grid": suite.grid_for(args.mode),
        "holdout_fraction": suite.holdout_fraction,
        **run_recipe(model_args, args),
    }


def existing_result(path: str, settings: dict) -> dict | None:
    """The record at `path` if there is one (None otherwise); an error if it was made with other settings."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as file:
            record = json.load(file)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is unreadable ({error}); remove it to run it again.") from None
    recorded = record.get("settings", {})
    differing = [key for key in settings if json.dumps(recorded.get(key)) != json.dumps(settings[key])]
    if differing:
        shown = "; ".join(f"another {key} ({recorded.get(key)!r}, now {settings[key]!r})" for key in differing[:5])
        more = f"; and {len(differing) - 5} more" if len(differing) > 5 else ""
        raise ValueError(f"{path} was made with {shown}{more}; choose another --output_dir, or remove it.")
    return record


def existing_results(runs: list[tuple[int, int, str]], settings: dict) -> dict:
    """{(shots, seed): its record, or None} of the runs (shots, seed, path)."""
    return {(k, s): existing_result(path, settings) for k, s, path in runs}


def main_process_view(args, read, *arguments):
    """`read(*arguments)` in the main process, and its value (or its ValueError, raised) in every process."""
    if args.world_size == 1:
        return read(*arguments)
    shared = [None]
    if args.process_index == 0:
        try:
            shared = [(read(*arguments), None)]
        except ValueError as error:
            shared = [(None, str(error))]
    torch.distributed.broadcast_object_list(shared, src=0)
    value, error = shared[0]
    if error is not None:
        raise ValueError(error)
    return value


def run_suite(
    suite: Suite, model_args, args, shots: list[int], seeds: list[int], cache_dir=None, bad_images: str = "skip"
) -> dict:
    """
    Every (dataset, shots, seed) of the suite, in that order; each result goes to `result_path` as soon as it exists
    and existing ones are kept (a killed suite resumes at the first missing one). Then `write_summary`.

    Returns:
        the summary (`summarize_suite`).
    """
    output_dir = args.output_dir
    os.makedirs(output_dir, exist_ok=True)
    bad_images = BadImagePolicy(bad_images, os.path.join(output_dir, SKIPPED_IMAGES))
    grid = suite.grid_for(args.mode)
    records = []
    for entry in suite.datasets:
        settings = run_settings(suite, entry, model_args, args)
        runs = [(k, s, result_path(output_dir, entry.name, k, s)) for k in shots for s in seeds]
        # The main process reads the records and every process takes its view: the processes agree on what is left
        # to run (also where another process would not see the folder, or would see a record being written).
        done = main_process_view(args, existing_results, runs, settings)
        records += [record for record in done.values() if record is not None]
        pending = [(k, s, path) for k, s, path in runs if done[k, s] is None]
        if not pending:
            logger.info(f"{entry.name}: all {len(runs)} results exist.")
            continue
        logger.info(f"{entry.name}: {len(runs) - len(pending)} of {len(runs)} results exist; running the rest.")
        data = TransferData.load(entry, cache_dir, bad_images)
        runner = FewShotRunner(data, model_args, args, bad_images, path_inside(output_dir, "work", entry.name))
        if args.mode == "linprobe":
            splits = [few_shot_split(data.labels(), k, s, suite.holdout_fraction) for k, s, _ in pending]
            runner.encode(sorted({i for train, held_out in splits for i in train + held_out}))
        for k, s, path in pending:
            result = runner.run(k, s, grid, suite.holdout_fraction)
            record = {
                "dataset": entry.name,
                "metrics": {"score": result.pop("score")},
                "shots": k,
                "seed": s,
                "settings": settings,
                **result,
            }
            if args.should_save:  # the main process (every process computed the same scores)
                record = write_report(
                    path, entry.name, record["metrics"], shots=k, seed=s, settings=settings, **result
                )
            records.append(record)
            logger.info(
                f"{entry.name} {k}-shot seed {s}: {entry.metric} {record['metrics']['score']:.4f} "
                f"(lr {result['chosen']['learning_rate']:g}, wd {result['chosen']['weight_decay']:g})"
            )
    summary = summarize_suite(records, [entry.name for entry in suite.datasets], shots, seeds)
    if args.should_save:
        write_summary(output_dir, summary, model_args.model_name_or_path, args.mode)
    return summary


def summarize_suite(records: list[dict], datasets: list[str], shots: list[int], seeds: list[int]) -> dict:
    """
    Scores (percent) per dataset and shots, mean +- std over seeds (`summarize_runs`: sample std), and the average
    over datasets: for each seed the mean over the datasets, then mean +- std of those over seeds, as the paper's
    table reports it. The average is given only for shots that every dataset has every seed of.

    Returns:
        {"datasets": {name: {"metric", "shots": {k: {"mean", "std", "runs"}}}}, "average": {k: {...}}, "shots",
        "seeds"}.
    """
    scores = {(r["dataset"], r["shots"], r["seed"]): 100 * r["metrics"]["score"] for r in records}
    metric = {r["dataset"]: r["settings"]["metric"] for r in records}
    summary = {"datasets": {}, "average": {}, "shots": shots, "seeds": seeds}
    for name in datasets:
        per_shots = {}
        for k in shots:
            runs = [{"score": scores[name, k, s]} for s in seeds if (name, k, s) in scores]
            if runs:
                per_shots[k] = summarize_runs(runs)["score"]
        summary["datasets"][name] = {"metric": metric.get(name), "shots": per_shots}
    for k in shots:
        if all((name, k, s) in scores for name in datasets for s in seeds):
            averages = [{"score": float(np.mean([scores[name, k, s] for name in datasets]))} for s in seeds]
            summary["average"][k] = summarize_runs(averages)["score"]
    return summary


def summary_markdown(summary: dict, model: str, mode: str) -> str:
    """A table laid out like the paper's few-shot table: a column per shots count, mean +- std over seeds."""
    shots = summary["shots"]

    def cell(stats):
        return "—" if stats is None else f"{stats['mean']:.2f} ± {stats['std']:.2f}"

    lines = [
        f"Few-shot {mode} of `{model}`: score (percent) by images per class, mean ± std over seeds "
        f"{', '.join(map(str, summary['seeds']))}.",
        "",
        "| dataset | metric | " + " | ".join(f"{k}-shot" for k in shots) + " |",
        "|---|---" + "|---" * len(shots) + "|",
    ]
    for name, entry in summary["datasets"].items():
        lines.append(
            f"| {name} | {entry['metric']} | " + " | ".join(cell(entry["shots"].get(k)) for k in shots) + " |"
        )
    lines.append(
        f"| **average over {len(summary['datasets'])}** | | "
        + " | ".join(cell(summary["average"].get(k)) for k in shots)
        + " |"
    )
    lines += [
        "",
        "For reference, the SupMAE paper (ELEVATER's 20 datasets, 5 / 20 / 50 shots, reported, not measured "
        "here): fine-tuning 46.76 ± 0.12 / 64.61 ± 0.82 / 71.71 ± 0.66; linear probing 47.97 ± 0.44 / "
        "60.86 ± 0.31 / 66.68 ± 0.47.",
    ]
    return "\n".join(lines) + "\n"


def write_summary(output_dir: str, summary: dict, model: str, mode: str) -> None:
    """`summary.json`, `summary.md` and `scores.png` in `output_dir`, each written whole or not at all."""
    write_report(os.path.join(output_dir, "summary.json"), "few-shot transfer", summary, model=model, mode=mode)
    markdown = summary_markdown(summary, model, mode)
    write_text(os.path.join(output_dir, "summary.md"), markdown)
    plot_scores(summary, os.path.join(output_dir, "scores.png"))
    logger.info("\n" + markdown)


@dataclass
class TransferArguments:
    suite: str | None = field(
        default=None, metadata={"help": "The suite file (YAML): datasets, metrics, grid (suites/elevater.yaml)."}
    )
    shots: str = field(default="5,20,50", metadata={"help": "Images per class, one run each (ELEVATER: 5,20,50)."})
    seeds: str = field(default="0,1,2", metadata={"help": "Seeds of the few-shot draws, one run each."})


def parse_integers(text: str, flag: str, minimum: int) -> list[int]:
    try:
        values = [int(value) for value in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated integers, got {text!r}.") from None
    if not values or min(values) < minimum or len(set(values)) != len(values):
        raise ValueError(f"{flag} takes distinct integers of at least {minimum}, got {text!r}.")
    return values


# What the suite's grid or protocol decides: given on the command line, they would be silently replaced.
GRID_OWNED = ("learning_rate", "base_learning_rate", "weight_decay", "save_strategy", "eval_strategy")


def check_transfer_arguments(transfer_args, model_args, data_args, args, given=()) -> tuple[list[int], list[int]]:
    """Mistakes refused before any data is read (`given`: the options named on the command line); returns (shots,
    seeds)."""
    owned = [name for name in GRID_OWNED if name in given]
    if owned:
        raise ValueError(
            f"--{', --'.join(owned)}: a transfer suite picks the learning rate and weight decay for each run from the "
            "suite file's grid (grid: in the YAML), and runs without checkpoints or evaluation during training."
        )
    if transfer_args.suite is None:
        raise ValueError("--suite is required: a suite file listing the datasets (e.g. suites/elevater.yaml).")
    if model_args.model_name_or_path is None:
        raise ValueError("--model_name_or_path is required: a SupMAE pretraining (or fine-tuned) checkpoint.")
    if args.mode not in ("linprobe", "finetune"):
        raise ValueError(f"--mode must be linprobe or finetune for a transfer suite, got {args.mode!r}.")
    if args.mode == "linprobe" and "linprobe_augment" in given and args.linprobe_augment:
        raise ValueError(
            "--linprobe_augment true: the suite's probe encodes each image once, with the evaluation "
            "transform (no augmentation to draw anew each epoch)."
        )
    given = [name for name in ("dataset_name", "train_dir", "validation_dir") if getattr(data_args, name)]
    given += ["few_shot"] * (args.few_shot is not None) + ["eval_datasets"] * bool(args.eval_datasets)
    if given:
        raise ValueError(f"--{', --'.join(given)}: the suite file names the data, and --shots / --seeds the runs.")
    return parse_integers(transfer_args.shots, "--shots", 2), parse_integers(transfer_args.seeds, "--seeds", 0)


DESCRIPTION = """Few-shot transfer of a pretrained SupMAE over a suite of datasets, with ELEVATER's protocol: K images
per class drawn by each seed, 20% of them held out to pick the learning rate and weight decay from the suite's grid,
then training on all K with the choice and scoring the test split with each dataset's metric. Every
run_classification.py option works too, but those the grid owns."""


def main(argv: list[str]) -> dict:
    """run_transfer.py: run the suite (resuming a killed one) and write its summary; returns the summary."""
    model_args, data_args, args, transfer_args = classification.parse(
        argv, "run_transfer.py", DESCRIPTION, extra=(TransferArguments,), first=("suite", "shots", "seeds")
    )
    configure_logging(args)
    shots, seeds = check_transfer_arguments(transfer_args, model_args, data_args, args, given_names(argv))
    suite = load_suite(transfer_args.suite)
    sources = {"--model_name_or_path": model_args.model_name_or_path}
    for entry in suite.datasets:
        sources.update(
            {f"{suite.path}: {entry.name} {split}": getattr(entry, split).source for split in ("train", "test")}
        )
    # The suite resumes result by result, each checked against its own settings (`existing_result`): no recipe here.
    with RunDirectory(args, "run_transfer.py", command_of(argv), None, sources):
        summary = run_suite(suite, model_args, args, shots, seeds, data_args.cache_dir, data_args.bad_images)
    print(f"Written to {args.output_dir}: results/, summary.json, summary.md, scores.png")
    return summary
