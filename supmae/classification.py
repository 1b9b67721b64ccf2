# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Image classification with a pretrained SupMAE (fine-tuning, linear probing, evaluation): the recipes, their
arguments, the model and data they build, and one training-and-evaluation run on the Trainer. run_classification.py
and run_transfer.py are thin scripts over this module."""

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Literal

import transformers
from transformers import TrainingArguments

from .arguments import (
    DataArguments,
    SupMAETrainingArguments,
    apply_config_overrides,
    check_labels,
    check_output_dir,
    configure_streaming,
    finished_run,
    parse_arguments,
    record_finished_run,
    resume_checkpoint,
    script_parser,
)
from .configuration_supmae import SupMAEConfig
from .data import (
    BadImagePolicy,
    EvalTransform,
    ImageCollator,
    MixupCollator,
    PretrainingTransform,
    TimmTrainTransform,
    TransformedImageDataset,
    class_names,
    eval_image_processor,
    load_labelled_split,
    transform_streaming_dataset,
)
from .evaluation import few_shot_indices, labels_to_model_space, load_class_subset, summarize_runs, write_report
from .model_card import classification_model_card
from .modeling_supmae import SupMAEForImageClassification
from .training import (
    LARS_MIN_EFFECTIVE_BATCH,
    SKIPPED_IMAGES,
    FeatureDataset,
    FeatureProbe,
    SupMAEClassificationTrainer,
    extract_features,
    linear_probe_optimizer,
    peak_learning_rate,
)


logger = logging.getLogger("run_classification")


# MAE's recipes (SUPMAE_SPEC.md). A flag given on the command line (or in the JSON file) overrides its entry.
RECIPES = {
    "finetune": {
        "base_learning_rate": 1e-3, "weight_decay": 0.05, "num_train_epochs": 100, "warmup_epochs": 5,
        "min_learning_rate": 1e-6, "layer_decay": 0.65, "drop_path_rate": 0.1, "mixup": 0.8, "cutmix": 1.0,
        "label_smoothing": 0.1, "auto_augment": "rand-m9-mstd0.5-inc1", "reprob": 0.25, "adam_beta2": 0.999,
        "classifier_pooling": "mean", "min_crop_scale": 0.08,
    },
    "linprobe": {
        "base_learning_rate": 0.1, "weight_decay": 0.0, "num_train_epochs": 90, "warmup_epochs": 10,
        "min_learning_rate": 0.0, "layer_decay": 1.0, "drop_path_rate": 0.0, "mixup": 0.0, "cutmix": 0.0,
        "label_smoothing": 0.0, "auto_augment": "none", "reprob": 0.0, "adam_beta2": 0.999,
        "classifier_pooling": "cls", "min_crop_scale": 0.08,
    },
}  # fmt: skip
RECIPES["eval"] = RECIPES["finetune"]
# Options that only fine-tuning uses: given with another mode, they would be silently ignored.
FINETUNE_ONLY = ("mixup", "cutmix", "auto_augment", "reprob", "layer_decay")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A SupMAE pretraining checkpoint (finetune, linprobe) or a fine-tuned one."}
    )
    config_overrides: str | None = field(default=None, metadata={"help": 'Config fields, e.g. "drop_path_rate=0.2".'})
    classifier_pooling: Literal["mean", "cls"] | None = field(
        default=None, metadata={"help": "'mean' of the patch tokens + fc_norm, or the 'cls' token (MAE's choices)."}
    )
    drop_path_rate: float | None = field(default=None, metadata={"help": "Stochastic depth of the last block."})


@dataclass
class ClassificationArguments(SupMAETrainingArguments):
    mode: Literal["finetune", "linprobe", "eval"] = field(
        default="finetune",
        metadata={"help": "finetune the whole model, linprobe a frozen encoder, or eval a fine-tuned model."},
    )
    base_learning_rate: float | None = field(default=None, metadata={"help": "The learning rate for a batch of 256."})
    min_learning_rate: float | None = field(default=None, metadata={"help": "The cosine's floor."})
    warmup_epochs: float | None = field(default=None, metadata={"help": "Linear warmup, in epochs."})
    warmup_steps: float = field(
        default=0.0, metadata={"help": "Linear warmup in steps, or a fraction of all steps (instead of epochs)."}
    )
    linprobe_optimizer: Literal["auto", "lars", "sgd"] = field(
        default="auto",
        metadata={
            "help": f"linprobe: MAE's 'lars', or 'sgd' (momentum 0.9, no trust ratio); 'auto': LARS from an effective "
            f"batch of {LARS_MIN_EFFECTIVE_BATCH} up, SGD below, where LARS barely moves the head."
        },
    )
    layer_decay: float | None = field(default=None, metadata={"help": "Layer-wise lr decay (finetune)."})
    mixup: float | None = field(default=None, metadata={"help": "Mixup alpha (finetune)."})
    cutmix: float | None = field(default=None, metadata={"help": "CutMix alpha (finetune)."})
    label_smoothing: float | None = field(default=None, metadata={"help": "Label smoothing."})
    auto_augment: str | None = field(default=None, metadata={"help": "A timm RandAugment policy, or none (finetune)."})
    reprob: float | None = field(default=None, metadata={"help": "Random erasing probability (finetune)."})
    min_crop_scale: float | None = field(default=None, metadata={"help": "RandomResizedCrop's smallest area."})
    linprobe_augment: bool = field(
        default=True, metadata={"help": "linprobe: RandomResizedCrop + flip (MAE); false: the evaluation transform."}
    )
    cache_features: bool = field(
        default=False,
        metadata={"help": "linprobe: encode the data once (evaluation transform) and train the head on the features."},
    )
    eval_datasets: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Extra evaluation sets, each NAME=SOURCE[,split=S][,subset=SPEC][,labels_in_subset=true]"
            "[,config=C][,image_column=C][,label_column=C]: SOURCE is a Hub dataset, a local dataset or image folder, "
            "or 'digits'; SPEC is imagenet-a, imagenet-r, a file of class indices / WordNet ids, or 3,7,11."
        },
    )
    class_subset: str | None = field(default=None, metadata={"help": "Restrict the validation split to a subset."})
    labels_in_subset: bool = field(
        default=False, metadata={"help": "The validation labels are positions in the subset (0..199)."}
    )
    few_shot: int | None = field(default=None, metadata={"help": "Train on this many images per class."})
    few_shot_seeds: str = field(default="0,1,2", metadata={"help": "Seeds of the few-shot runs (mean +- std)."})
    lr_scheduler_type: str = field(default="cosine_with_min_lr", metadata={"help": "Warmup, then cosine to min lr."})
    # The robustness table (supmae/robustness.py). Each set: SOURCE[,split=S][,config=C][,image_column=C]...
    imagenet_c: str | None = field(
        default=None,
        metadata={"help": "ImageNet-C: DIR/<corruption>/<severity>/<wnid>/*.JPEG, or a source template with "
                  "{corruption} and {severity} (one dataset per set). Reports each error, CE and the mCE."},
    )  # fmt: skip
    imagenet_val: str | None = field(default=None, metadata={"help": "Robustness table: clean ImageNet-1k val."})
    imagenet_a: str | None = field(default=None, metadata={"help": "Robustness table: ImageNet-A (200 classes)."})
    imagenet_r: str | None = field(default=None, metadata={"help": "Robustness table: ImageNet-R (200 classes)."})
    imagenet_sketch: str | None = field(default=None, metadata={"help": "Robustness table: ImageNet-Sketch."})
    corrupt: str | None = field(
        default=None,
        metadata={"help": "Also evaluate every evaluation set corrupted on the fly (imagecorruptions-imaug): 'all', "
                  "'benchmark' (ImageNet-C's 15) or names such as gaussian_noise,fog."},
    )  # fmt: skip
    corrupt_severities: str = field(default="1,2,3,4,5", metadata={"help": "The severities of --corrupt."})


DESCRIPTION = """Fine-tune, linearly probe or evaluate a pretrained SupMAE, on the Hugging Face Trainer. Each --mode's
defaults are MAE's recipe for it; any flag you pass wins. With no arguments: the digits demo (fine-tunes
outputs/digits-pretrained, written by `python run_pretraining.py`)."""


def recipe_defaults() -> dict[str, str]:
    """`--help`'s defaults of the options each --mode's recipe sets: "finetune: 100, linprobe: 90"."""
    shown = {}
    for name in RECIPES["finetune"]:
        values = {mode: RECIPES[mode][name] for mode in ("finetune", "linprobe")}
        shown[name] = (
            str(values["finetune"])
            if values["finetune"] == values["linprobe"]
            else ", ".join(f"{mode}: {value}" for mode, value in values.items())
        )
    shown["learning_rate"] = "base_learning_rate x effective batch / 256"
    shown["warmup_steps"] = "unset: --warmup_epochs"
    return shown


def parse_classification_arguments(
    argv: list[str], prog: str = "run_classification.py", description: str = DESCRIPTION, before=(), first=()
):
    """The arguments of run_classification.py (and of scripts built on it: `before` are their own dataclasses,
    parsed first and returned first): the recipe of `--mode` fills in what was not given, and combinations that
    would silently ignore an option are refused."""
    parser = script_parser((*before, ModelArguments, DataArguments, ClassificationArguments), prog, description,
                           recipe_defaults(), first=(*first, "mode", "model_name_or_path"))  # fmt: skip
    (*own, model_args, data_args, args), given = parse_arguments(parser, argv)
    ignored = sorted(name for name in FINETUNE_ONLY if name in given) if args.mode != "finetune" else []
    if ignored:
        raise ValueError(f"--{', --'.join(ignored)}: used only by --mode finetune, not --mode {args.mode}; remove it.")
    if args.cache_features and "linprobe_augment" in given and args.linprobe_augment:
        raise ValueError(
            "--cache_features encodes each image once, without augmentation: it cannot be combined with "
            "--linprobe_augment true."
        )
    for pair in (("learning_rate", "base_learning_rate"), ("warmup_steps", "warmup_epochs")):
        if set(pair) <= given:
            raise ValueError(f"--{pair[0]} and --{pair[1]} both set the same thing; pass one of them.")
    optim = getattr(args.optim, "value", args.optim)
    if optim not in ("adamw_torch", "adamw_torch_fused"):
        raise ValueError(
            f"--optim {optim}: run_classification.py builds MAE's optimizers itself (AdamW with layer-wise lr "
            "decay to fine-tune; LARS or SGD to probe, see --linprobe_optimizer). --optim picks only AdamW's kernel: "
            "adamw_torch or adamw_torch_fused."
        )
    for name, value in RECIPES[args.mode].items():  # the recipe fills in what was not given
        target = model_args if hasattr(model_args, name) else args
        if name not in given and (getattr(target, name, None) is None or hasattr(TrainingArguments, name)):
            setattr(target, name, value)
    if "warmup_steps" in given:
        args.warmup_epochs = None
    if "learning_rate" not in given:
        args.learning_rate = None  # run() computes it: base_learning_rate x effective batch / 256
    return (*own, model_args, data_args, args)


def parse_eval_spec(spec: str) -> dict:
    """`NAME=SOURCE,key=value,...` -> {"name", "source", "split", "subset", "labels_in_subset", ...}."""
    head, *options = spec.split(",")
    name, _, source = head.partition("=")
    if not name or not source:
        raise ValueError(f"--eval_datasets entry {spec!r} must start with NAME=SOURCE.")
    parsed = {"name": name, "source": source}
    allowed = {"split", "subset", "labels_in_subset", "image_column", "label_column", "config"}
    key = None
    for option in options:
        if "=" not in option and key == "subset":  # an inline class list: subset=3,7,11
            parsed[key] += "," + option
            continue
        key, _, value = option.partition("=")
        if key not in allowed:
            raise ValueError(f"Unknown option {key!r} in --eval_datasets entry {spec!r}; allowed: {sorted(allowed)}.")
        parsed[key] = value.lower() in ("1", "true", "yes") if key == "labels_in_subset" else value
    return parsed


def label_map_for(dataset, label_column, config, subset=None, labels_in_subset=False) -> dict[int, int] | None:
    """How an evaluation set's labels become the model's class indices: by class name when both sides have names in
    a different order, then through a class subset; None when they already agree. (Streamed sets: not checked.)"""
    if label_column is None or not hasattr(dataset, "__len__"):
        return None
    mapping = {label: label for label in sorted(set(dataset[label_column]))}
    names = class_names(dataset, label_column)
    model_names = [config.id2label[i] for i in range(config.num_labels)]
    if names is not None and not labels_in_subset and names != model_names[: len(names)]:
        missing = [name for name in names if name not in model_names]
        if missing:
            raise ValueError(f"Classes {missing[:10]} of the evaluation set are not among the model's classes.")
        mapping = {label: model_names.index(names[label]) for label in mapping}
    if subset is not None:
        mapping = dict(
            zip(mapping, labels_to_model_space(list(mapping.values()), subset, labels_in_subset), strict=True)
        )
    return None if all(key == value for key, value in mapping.items()) else mapping


class RelabeledDataset(TransformedImageDataset):
    def __init__(self, *args, label_map=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_map = label_map

    def __getitem__(self, index):
        item = super().__getitem__(index)
        if self.label_map is not None and "labels" in item:
            item["labels"] = self.label_map[item["labels"]]
        return item


def build_model(model_args: ModelArguments, args: ClassificationArguments, names: list[str] | None):
    source = SupMAEConfig.from_pretrained(model_args.model_name_or_path)
    if args.mode == "eval":
        return SupMAEForImageClassification.from_pretrained(model_args.model_name_or_path)
    overrides = {
        "drop_path_rate": model_args.drop_path_rate,
        "classifier_pooling": model_args.classifier_pooling,
        "classifier_batch_norm": args.mode == "linprobe",
    }
    if names is not None:
        overrides.update(num_labels=len(names), id2label=dict(enumerate(names)),
                         label2id={n: i for i, n in enumerate(names)})  # fmt: skip
    if model_args.config_overrides:
        keys = apply_config_overrides(source, model_args.config_overrides)
        overrides.update({key: getattr(source, key) for key in keys})
    # A fine-tuned checkpoint with other classes gets a new classifier.
    finetuned = (source.architectures or [""])[0] == "SupMAEForImageClassification"
    mismatched = finetuned and names is not None and source.num_labels != len(names)
    if mismatched:
        logger.info(f"The checkpoint classifies {source.num_labels} classes, the data {len(names)}: new classifier.")
    model = SupMAEForImageClassification.from_pretrained(
        model_args.model_name_or_path, ignore_mismatched_sizes=mismatched, **overrides
    )
    if args.mode == "linprobe":
        for name, parameter in model.named_parameters():
            parameter.requires_grad = name.startswith("classifier.")
    return model


def train_transform(args: ClassificationArguments, image_size: int, image_processor):
    if args.mode == "finetune":
        return TimmTrainTransform(image_size, args.auto_augment, args.reprob, scale=(args.min_crop_scale, 1.0))
    if args.linprobe_augment and not args.cache_features:
        return PretrainingTransform(image_size, scale=(args.min_crop_scale, 1.0))  # MAE's linear-probing augmentation
    return EvalTransform(image_processor)


def evaluation_set(dataset, image_column, label_column, image_processor, label_map=None, bad_images=None):
    """An evaluation set with the evaluation transform, labels in the model's class space."""
    transform = EvalTransform(image_processor)
    if not hasattr(dataset, "__len__"):  # streamed
        return transform_streaming_dataset(dataset, image_column, label_column, transform, bad_images)
    return RelabeledDataset(dataset, image_column, label_column, transform, bad_images=bad_images, label_map=label_map)


def evaluation_sets(
    args, data_args, data, config, image_processor, bad_images
) -> list[tuple[str, object, list[int] | None]]:
    """(name, dataset, class subset) for the validation split and every --eval_datasets entry."""
    sets = []
    if data is not None and data.validation is not None:
        subset = load_class_subset(args.class_subset, config.num_labels) if args.class_subset else None
        label_map = label_map_for(data.validation, data.label_column, config, subset, args.labels_in_subset)
        dataset = evaluation_set(
            data.validation, data.image_column, data.label_column, image_processor, label_map, bad_images
        )
        sets.append(("validation", dataset, subset))
    for spec in map(parse_eval_spec, args.eval_datasets):
        dataset, image_column, label_column = load_labelled_split(
            spec["source"], spec.get("split"), spec.get("config"), data_args.cache_dir, spec.get("image_column"),
            spec.get("label_column"), what=f"The evaluation set {spec['name']!r}",
        )  # fmt: skip
        subset = load_class_subset(spec["subset"], config.num_labels) if spec.get("subset") else None
        label_map = label_map_for(dataset, label_column, config, subset, spec.get("labels_in_subset", False))
        sets.append(
            (
                spec["name"],
                evaluation_set(dataset, image_column, label_column, image_processor, label_map, bad_images),
                subset,
            )
        )
    return sets


def make_trainer(model, args, data, train_split, validation, trainer_kwargs, bad_images, shuffle_buffer_size=10_000):
    """The training Trainer: on cached features (linprobe --cache_features), or on augmented images."""
    config, collator = model.config, ImageCollator(model.config.num_labels)
    image_processor = trainer_kwargs["processing_class"]
    if args.mode == "linprobe" and args.cache_features:
        train_images = evaluation_set(
            train_split, data.image_column, data.label_column, image_processor, bad_images=bad_images
        )
        train = FeatureDataset(extract_features(model, train_images, args, collator))
        validation = validation and FeatureDataset(extract_features(model, validation, args, collator))
        return SupMAEClassificationTrainer(
            model=FeatureProbe(model), train_dataset=train, eval_dataset=validation, **trainer_kwargs
        )
    mixing = args.mode == "finetune" and (args.mixup > 0 or args.cutmix > 0)
    if mixing and args.per_device_train_batch_size % 2:
        raise ValueError("Mixup / CutMix need an even --per_device_train_batch_size.")
    image_size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    transform = train_transform(args, image_size, image_processor)
    if hasattr(train_split, "__len__"):
        train = TransformedImageDataset(
            train_split, data.image_column, data.label_column, transform, args.seed, bad_images
        )
    else:  # streamed
        configure_streaming(args, train_split)
        train_split = train_split.shuffle(seed=args.seed, buffer_size=shuffle_buffer_size)
        train = transform_streaming_dataset(train_split, data.image_column, data.label_column, transform, bad_images)
    trainer = SupMAEClassificationTrainer(
        model=model,
        train_dataset=train,
        eval_dataset=validation,
        data_collator=MixupCollator(config.num_labels, args.mixup, args.cutmix, args.label_smoothing)
        if mixing
        else collator,
        **trainer_kwargs,
    )
    trainer.eval_data_collator = collator  # evaluation never mixes images
    return trainer


def training_schedule(args, effective_batch: int) -> tuple[dict, list[str]]:
    """The TrainingArguments values this script decides (peak lr, warmup, the cosine's floor) and log lines that
    say where they come from; what the user passed wins."""
    learning_rate, lr_line = peak_learning_rate(args.learning_rate, args.base_learning_rate, effective_batch)
    values, lines = {"learning_rate": learning_rate}, [f"{args.mode}: {lr_line}"]
    if args.warmup_epochs is not None:
        if args.num_train_epochs and args.warmup_epochs >= args.num_train_epochs and args.max_steps <= 0:
            raise ValueError(
                f"--warmup_epochs {args.warmup_epochs:g} is not shorter than --num_train_epochs "
                f"{args.num_train_epochs:g}; lower it (or pass --warmup_steps)."
            )
        values["warmup_steps"] = args.warmup_epochs / args.num_train_epochs if args.num_train_epochs else 0.0
    if args.lr_scheduler_type == "cosine_with_min_lr" and not args.lr_scheduler_kwargs:
        values["lr_scheduler_kwargs"] = {"min_lr": args.min_learning_rate}
    return values, lines


def optimizer_for(args, effective_batch: int) -> tuple[str, str | None]:
    """The trainer's optimizer for `--mode` (MAE's AdamW to fine-tune; LARS or momentum SGD to probe, by
    `--linprobe_optimizer` and the batch) and, for a probe, a log line saying which."""
    if args.mode != "linprobe":
        return "adamw", None
    return linear_probe_optimizer(args.linprobe_optimizer, effective_batch)


def run(model_args, data_args, args, data, train_indices=None, command=None) -> dict[str, dict]:
    """Train (unless --mode eval) and evaluate; returns {evaluation set name: metrics}. A finished run of the same
    `command` in `args.output_dir` is reported again instead (`finished_run`)."""
    if args.mode != "eval" and command is not None:
        previous = finished_run(args.output_dir, command)
        if previous is not None:
            logger.warning(f"{args.output_dir} already holds a finished run of this command: reporting its results "
                           "instead of training again (remove it, or choose another --output_dir, to train anew).")  # fmt: skip
            return previous["results"]
    resume = resume_checkpoint(args) if args.mode != "eval" else None
    model = build_model(model_args, args, data.class_names if data else None)
    config = model.config
    check_output_dir(args, model if args.mode != "eval" else None)
    if args.mode != "eval":
        check_labels(data.train, data.label_column, config.num_labels)
    image_size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    image_processor = eval_image_processor(image_size)
    bad_images = BadImagePolicy(data_args.bad_images, os.path.join(args.output_dir, SKIPPED_IMAGES))
    sets = evaluation_sets(args, data_args, data, config, image_processor, bad_images)
    from . import robustness  # (it builds on this module)

    sets += robustness.robustness_sets(args, config, image_processor, bad_images, data_args.cache_dir)
    effective_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    schedule, log_lines = training_schedule(args, effective_batch)
    optimizer_name, line = optimizer_for(args, effective_batch)
    log_lines += [line] if line else []
    train_args = dataclasses.replace(args, **schedule)
    trainer_kwargs = dict(
        optimizer_name=optimizer_name,
        layer_decay=args.layer_decay,
        label_smoothing=args.label_smoothing,
        class_subset=sets[0][2] if sets and sets[0][0] == "validation" else None,
        args=train_args,
        processing_class=image_processor,
    )

    if args.mode != "eval":
        for line in log_lines:
            logger.info(line)
        train_split = data.train if train_indices is None else data.train.select(train_indices)
        validation = sets[0][1] if sets and sets[0][0] == "validation" else None
        trainer = make_trainer(
            model, train_args, data, train_split, validation, trainer_kwargs, bad_images,
            data_args.shuffle_buffer_size,
        )  # fmt: skip
        trainer.train(resume_from_checkpoint=resume)
        model.save_pretrained(args.output_dir)  # the classifier, also when the trainer trained its head on features
        image_processor.save_pretrained(args.output_dir)
        trainer.save_state()

    trainer_kwargs["args"] = dataclasses.replace(train_args, eval_strategy="no")  # sets are evaluated one by one
    evaluator = SupMAEClassificationTrainer(
        model=model, data_collator=ImageCollator(config.num_labels), **trainer_kwargs
    )
    reports = {}
    for name, dataset, subset in sets:
        evaluator.set_class_subset(subset)
        metrics = evaluator.evaluate(dataset, metric_key_prefix=name)
        metrics = {
            k: metrics[f"{name}_{k}"] for k in ("top1", "top5", "loss", "num_samples") if f"{name}_{k}" in metrics
        }
        reports[name] = metrics
        if evaluator.is_world_process_zero():
            write_report(os.path.join(args.output_dir, f"eval_{name}.json"), name, metrics,
                         model=model_args.model_name_or_path, mode=args.mode, num_labels=config.num_labels,
                         class_subset=subset)  # fmt: skip
            logger.info(f"{name}: " + json.dumps({k: round(v, 4) for k, v in metrics.items()}))
    if robustness.requested(args):  # ImageNet-C, corrupted copies, then the table of everything evaluated
        reports.update(robustness.evaluate_robustness(evaluator, args, config, sets, reports, bad_images,
                                                      data_args.cache_dir, model_args.model_name_or_path))  # fmt: skip

    if args.mode != "eval" and evaluator.is_world_process_zero():
        card = classification_model_card(
            config, mode=args.mode, dataset=data_args.dataset_name or data_args.train_dir, reports=reports,
            training={"effective batch": effective_batch, "learning rate": train_args.learning_rate,
                      "optimizer": optimizer_name, "epochs": args.num_train_epochs,
                      "few-shot images per class": args.few_shot, "seed": args.seed},
            base_model=model_args.model_name_or_path,
        )  # fmt: skip
        with open(os.path.join(args.output_dir, "README.md"), "w") as file:
            file.write(card)
        if command is not None:
            record_finished_run(args.output_dir, command, reports)
    return reports


def check_classification_arguments(model_args: ModelArguments, data_args: DataArguments, args) -> None:
    """Combinations that cannot work, refused before any data is read."""
    if model_args.model_name_or_path is None:
        raise ValueError("--model_name_or_path is required: a SupMAE pretraining or fine-tuned checkpoint.")
    if data_args.streaming and args.max_steps <= 0 and args.mode != "eval":
        raise ValueError("--streaming needs --max_steps: a streamed dataset has no length to count epochs in.")
    if args.cache_features and args.mode != "linprobe":
        raise ValueError("--cache_features is for --mode linprobe (the encoder must be frozen).")
    has_data = data_args.dataset_name is not None or data_args.train_dir is not None
    robustness = args.imagenet_c or args.imagenet_val or args.imagenet_a or args.imagenet_r or args.imagenet_sketch
    if args.mode == "eval" and not (has_data or args.eval_datasets or robustness):
        raise ValueError("--mode eval needs data: --dataset_name / --train_dir / --validation_dir, --eval_datasets "
                         "or the robustness sets (--imagenet_c, --imagenet_val, --imagenet_a, ...).")  # fmt: skip
    if args.few_shot is not None and data_args.streaming:
        raise ValueError("--few_shot samples images per class and needs a map-style dataset, not --streaming.")
    from .robustness import check_robustness_arguments  # (robustness builds on this module)

    check_robustness_arguments(args)
    if args.few_shot is not None and (robustness or args.corrupt):
        raise ValueError(
            "--few_shot with the robustness evaluation (--imagenet_*, --corrupt): evaluate each few-shot model with "
            "--mode eval instead (its mean over seeds is not defined for the mCE's tables)."
        )


def run_few_shot(model_args, data_args, args, data, command=None) -> dict[str, dict]:
    """`run` on `args.few_shot` images per class for each of `args.few_shot_seeds`, each seed in its own
    `K-shot-seed-S` folder; returns (and writes as `few_shot_K.json`) the mean and spread over seeds."""
    output_dir, runs = args.output_dir, []
    seeds = [int(seed) for seed in args.few_shot_seeds.split(",")]
    for seed in seeds:
        indices = few_shot_indices(data.train[data.label_column], args.few_shot, seed)
        args.output_dir, args.seed = os.path.join(output_dir, f"{args.few_shot}-shot-seed-{seed}"), seed
        transformers.set_seed(seed)
        runs.append(run(model_args, data_args, args, data, train_indices=indices, command=command))
    args.output_dir = output_dir
    reports = {name: summarize_runs([r[name] for r in runs]) for name in runs[0]}
    write_report(os.path.join(output_dir, f"few_shot_{args.few_shot}.json"), "few-shot", reports,
                 shots=args.few_shot, seeds=seeds, mode=args.mode, model=model_args.model_name_or_path)  # fmt: skip
    return reports
