# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Image classification with a pretrained SupMAE: fine-tuning, linear probing and evaluation on the Trainer, with
MAE's recipe for each mode."""

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Literal

import transformers
from transformers import TrainingArguments

from ..cli import ScriptParser, command_of, configure_logging, demo_or_given, parse_arguments
from ..configuration_supmae import SupMAEConfig
from ..data.collators import ImageCollator, MixupCollator
from ..data.datasets import FeatureDataset, TransformedImageDataset, transform_streaming_dataset
from ..data.few_shot import few_shot_indices
from ..data.images import SKIPPED_IMAGES, BadImagePolicy
from ..data.sources import check_labels, prepare_data
from ..data.transforms import EvalTransform, PretrainingTransform, TimmTrainTransform, eval_image_processor
from ..metrics import summarize_runs
from ..modeling_supmae import SupMAEForImageClassification
from ..reports.model_card import classification_model_card
from ..training.arguments import DataArguments, SupMAETrainingArguments, apply_config_overrides
from ..training.checkpoints import resume_checkpoint
from ..training.classification import (
    FeatureProbe,
    SupMAEClassificationTrainer,
    extract_features,
    scored_features,
)
from ..training.distributed import configure_streaming, share_main_process_buffers
from ..training.files import path_inside, write_report
from ..training.optim import (
    LARS_MIN_EFFECTIVE_BATCH,
    check_layer_decay,
    effective_batch_size,
    linear_probe_optimizer,
    peak_learning_rate,
)
from ..training.runs import (
    RunDirectory,
    check_output_dir,
    local_sources,
    previous_results,
    record_finished_run,
    run_recipe,
    write_model_card,
)
from .evaluation_sets import evaluation_set, evaluation_sets, parse_eval_spec
from .robustness import (
    ROBUSTNESS_SETS,
    RobustnessArguments,
    check_robustness_arguments,
    evaluate_robustness,
    requested,
    robustness_sets,
)


logger = logging.getLogger(__name__)


# MAE's recipes (its main_finetune.py and main_linprobe.py; docs/CLASSIFICATION.md). A flag given on the command line
# (or in the JSON file) overrides its entry.
RECIPES = {
    "finetune": {
        "base_learning_rate": 1e-3,
        "weight_decay": 0.05,
        "num_train_epochs": 100,
        "warmup_epochs": 5,
        "min_learning_rate": 1e-6,
        "layer_decay": 0.65,
        "drop_path_rate": 0.1,
        "mixup": 0.8,
        "cutmix": 1.0,
        "label_smoothing": 0.1,
        "auto_augment": "rand-m9-mstd0.5-inc1",
        "reprob": 0.25,
        "adam_beta2": 0.999,
        "classifier_pooling": "mean",
        "min_crop_scale": 0.08,
    },
    "linprobe": {
        "base_learning_rate": 0.1,
        "weight_decay": 0.0,
        "num_train_epochs": 90,
        "warmup_epochs": 10,
        "min_learning_rate": 0.0,
        "layer_decay": 1.0,
        "drop_path_rate": 0.0,
        "mixup": 0.0,
        "cutmix": 0.0,
        "label_smoothing": 0.0,
        "auto_augment": "none",
        "reprob": 0.0,
        "adam_beta2": 0.999,
        "classifier_pooling": "cls",
        "min_crop_scale": 0.08,
    },
}
RECIPES["eval"] = RECIPES["finetune"]


# Options that only fine-tuning uses: given with another mode, they would be silently ignored.
FINETUNE_ONLY = ("mixup", "cutmix", "auto_augment", "reprob", "layer_decay")


@dataclass
class ClassificationModelArguments:
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


def parse(argv: list[str], prog: str = "run_classification.py", description: str = DESCRIPTION, extra=(), first=()):
    """The arguments of run_classification.py, and of scripts built on it (run_transfer.py): `(model_args,
    data_args, args, *extra)`, `extra` being the script's own dataclasses. The recipe of `--mode` fills in what was
    not given, and combinations that would silently ignore an option are refused."""
    dataclass_types = (ClassificationModelArguments, DataArguments, ClassificationArguments, *extra)
    parser = ScriptParser(
        dataclass_types, prog, description, recipe_defaults(), (*first, "mode", "model_name_or_path")
    )
    (model_args, data_args, args, *own), given = parse_arguments(parser, argv)
    ignored = sorted(name for name in FINETUNE_ONLY if name in given) if args.mode != "finetune" else []
    if ignored:
        raise ValueError(f"--{', --'.join(ignored)}: used only by --mode finetune, not --mode {args.mode}; remove it.")
    if args.cache_features and "linprobe_augment" in given and args.linprobe_augment:
        raise ValueError(
            "--cache_features encodes each image once, without augmentation: it cannot be combined with "
            "--linprobe_augment true."
        )
    for spec in args.eval_datasets:  # each entry's name becomes a report's file name: checked before anything runs
        parse_eval_spec(spec)
    if args.few_shot is not None:
        few_shot_seeds(args)  # each seed names a folder
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
    check_layer_decay(args.layer_decay)
    if "warmup_steps" in given:
        args.warmup_epochs = None
    if "learning_rate" not in given:
        args.learning_rate = None  # run() computes it: base_learning_rate x effective batch / 256
    return (model_args, data_args, args, *own)


def main(argv: list[str], demo: list[str] | None = None) -> dict:
    """run_classification.py: fine-tune, probe or evaluate with `argv`, or with the `demo` arguments (`demo_or_given`);
    prints each evaluation set's top-1 and returns {set: metrics}."""
    argv, _ = demo_or_given(argv, demo)
    model_args, data_args, args, robustness_args = parse(argv, extra=(RobustnessArguments,))
    configure_logging(args)
    check_arguments(model_args, data_args, args, robustness_args)
    command = command_of(argv)
    recipe = run_recipe(model_args, data_args, args, robustness_args)
    sources = read_sources(model_args, data_args, args, robustness_args)
    with RunDirectory(args, "run_classification.py", command, recipe, sources):
        transformers.set_seed(args.seed)
        has_data = data_args.dataset_name is not None or data_args.train_dir is not None
        listing = BadImagePolicy(data_args.bad_images, os.path.join(args.output_dir, SKIPPED_IMAGES))
        data = prepare_data(data_args, args.seed, listing) if has_data or args.mode != "eval" else None
        if args.mode != "eval" and data.label_column is None:
            raise ValueError(f"No label column in the training data (columns: {data.train.column_names}).")
        if args.few_shot is None:
            reports = run(model_args, data_args, args, data, robustness_args, command=command)
        else:
            reports = run_few_shot(model_args, data_args, args, data, command=command)
        for name, metrics in reports.items():
            top1 = metrics["top1"]["mean"] if isinstance(metrics["top1"], dict) else metrics["top1"]
            spread = f" +- {metrics['top1']['std']:.4f}" if isinstance(metrics["top1"], dict) else ""
            print(f"{name}: top-1 {top1:.4f}{spread}")
        print(f"Written to {os.path.abspath(args.output_dir)}")
        return reports


def read_sources(model_args, data_args, args, robustness_args) -> dict[str, str | None]:
    """What the run reads, by option (the model, the data, each evaluation set): --output_dir must stay apart."""
    sources = local_sources(model_args, data_args)
    for spec in map(parse_eval_spec, args.eval_datasets):
        sources[f"--eval_datasets {spec['name']}"] = spec["source"]
    for name, argument in ROBUSTNESS_SETS.items():
        if getattr(robustness_args, argument):
            sources[f"--{argument}"] = parse_eval_spec(f"{name}={getattr(robustness_args, argument)}")["source"]
    sources["--imagenet_c"] = robustness_args.imagenet_c
    return sources


def build_model(model_args: ClassificationModelArguments, args: ClassificationArguments, names: list[str] | None):
    """The classifier for `--mode`: a fine-tuned checkpoint as it is (eval), or a pretraining checkpoint's encoder
    with a new head for the data's classes (a frozen encoder for linprobe)."""
    source = SupMAEConfig.from_pretrained(model_args.model_name_or_path)
    if args.mode == "eval":
        return SupMAEForImageClassification.from_pretrained(model_args.model_name_or_path)
    overrides = {
        "drop_path_rate": model_args.drop_path_rate,
        "classifier_pooling": model_args.classifier_pooling,
        "classifier_batch_norm": args.mode == "linprobe",
    }
    if names is not None:
        overrides.update(
            num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
        )
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


def train_transform(args: ClassificationArguments, image_size, image_processor):
    """The training images' transform of `--mode`: timm's augmentation to fine-tune, MAE's crop + flip to probe
    (the evaluation transform with --linprobe_augment false or --cache_features)."""
    if args.mode == "finetune":
        return TimmTrainTransform(image_size, args.auto_augment, args.reprob, scale=(args.min_crop_scale, 1.0))
    if args.linprobe_augment and not args.cache_features:
        return PretrainingTransform(image_size, scale=(args.min_crop_scale, 1.0))  # MAE's linear-probing augmentation
    return EvalTransform(image_processor)


def make_trainer(model, args, data, train_split, validation, trainer_kwargs, bad_images, shuffle_buffer_size=10_000):
    """The training Trainer: on cached features (linprobe --cache_features), or on augmented images."""
    config, collator = model.config, ImageCollator(model.config.num_labels)
    image_processor = trainer_kwargs["processing_class"]
    if args.mode == "linprobe" and args.cache_features:
        train_images = evaluation_set(
            train_split, data.image_column, data.label_column, image_processor, bad_images=bad_images
        )
        # Without the rows of unreadable images: features of nothing would train and score the head.
        train = FeatureDataset(scored_features(extract_features(model, train_images, args, collator)))
        validation = validation and FeatureDataset(
            scored_features(extract_features(model, validation, args, collator))
        )
        return SupMAEClassificationTrainer(
            model=FeatureProbe(model), train_dataset=train, eval_dataset=validation, **trainer_kwargs
        )
    mixing = args.mode == "finetune" and (args.mixup > 0 or args.cutmix > 0)
    if mixing and args.per_device_train_batch_size % 2:
        raise ValueError("Mixup / CutMix need an even --per_device_train_batch_size.")
    transform = train_transform(args, config.image_height_width, image_processor)
    if hasattr(train_split, "__len__"):
        columns = (data.image_column, data.label_column)
        train = TransformedImageDataset(train_split, *columns, transform, args.seed, bad_images, sample_seeds=mixing)
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


def run(model_args, data_args, args, data, robustness_args=None, train_indices=None, command=None) -> dict[str, dict]:
    """Train (unless --mode eval) and evaluate; returns {evaluation set name: metrics}. A finished run of the same
    `command` in `args.output_dir` is reported again instead (`previous_results`)."""
    if args.mode != "eval" and command is not None:
        previous = previous_results(args.output_dir, command)
        if previous is not None:
            return previous
    resume = resume_checkpoint(args) if args.mode != "eval" else None
    model = build_model(model_args, args, data.class_names if data else None)
    config = model.config
    check_output_dir(args, model if args.mode != "eval" else None)
    if args.mode != "eval":
        check_labels(data.train, data.label_column, config.num_labels)
    image_processor = eval_image_processor(config.image_height_width)
    bad_images = BadImagePolicy(data_args.bad_images, os.path.join(args.output_dir, SKIPPED_IMAGES))
    sets = evaluation_sets(args, data_args, data, config, image_processor, bad_images)
    if robustness_args is not None:
        sets += robustness_sets(robustness_args, config, image_processor, bad_images, data_args.cache_dir)
    validation = sets[0] if sets and sets[0][0] == "validation" else None
    schedule, log_lines = training_schedule(args, effective_batch_size(args))
    optimizer_name, optimizer_line = optimizer_for(args, effective_batch_size(args))
    train_args = dataclasses.replace(args, **schedule)
    trainer_kwargs = dict(
        optimizer_name=optimizer_name,
        layer_decay=args.layer_decay,
        label_smoothing=args.label_smoothing,
        class_subset=validation[2] if validation else None,
        args=train_args,
        processing_class=image_processor,
    )

    if args.mode != "eval":
        for line in [*log_lines, *([optimizer_line] if optimizer_line else [])]:
            logger.info(line)
        train_split = data.train if train_indices is None else data.train.select(train_indices)
        trainer = make_trainer(
            model,
            train_args,
            data,
            train_split,
            validation and validation[1],
            trainer_kwargs,
            bad_images,
            data_args.shuffle_buffer_size,
        )
        trainer.train(resume_from_checkpoint=resume)
        # The classifier, also when the trainer trained its head on features; from the main process only, since
        # save_pretrained writes from every process it runs in (the code files).
        if trainer.is_world_process_zero():
            model.save_pretrained(args.output_dir)
            image_processor.save_pretrained(args.output_dir)
        trainer.save_state()
        share_main_process_buffers(model, args)  # every process evaluates the model the main process saved

    trainer_kwargs["args"] = dataclasses.replace(train_args, eval_strategy="no")  # sets are evaluated one by one
    evaluator = SupMAEClassificationTrainer(
        model=model, data_collator=ImageCollator(config.num_labels), **trainer_kwargs
    )
    reports = evaluate_sets(evaluator, sets, model_args.model_name_or_path, args.mode)
    if robustness_args is not None and requested(robustness_args):  # ImageNet-C, corrupted copies, then the table
        reports.update(
            evaluate_robustness(
                evaluator,
                robustness_args,
                args.output_dir,
                config,
                sets,
                reports,
                bad_images,
                data_args.cache_dir,
                model_args.model_name_or_path,
            )
        )

    if args.mode != "eval" and evaluator.is_world_process_zero():
        card = classification_model_card(
            config,
            mode=args.mode,
            dataset=data_args.dataset_name or data_args.train_dir,
            reports=reports,
            training={
                "effective batch": effective_batch_size(args),
                "learning rate": train_args.learning_rate,
                "optimizer": optimizer_name,
                "epochs": args.num_train_epochs,
                "few-shot images per class": args.few_shot,
                "seed": args.seed,
            },
            base_model=model_args.model_name_or_path,
            license=train_args.license,
        )
        write_model_card(args.output_dir, card)
        if command is not None:
            record_finished_run(args.output_dir, command, reports)
    return reports


def evaluate_sets(evaluator, sets, model_name: str, mode: str) -> dict[str, dict]:
    """Each evaluation set's top-1, top-5, loss and number of images scored; each also written as `eval_NAME.json`."""
    reports, config, output_dir = {}, evaluator.model.config, evaluator.args.output_dir
    for name, dataset, subset in sets:
        evaluator.set_class_subset(subset)
        metrics = evaluator.evaluate(dataset, metric_key_prefix=name)
        metrics = {
            k: metrics[f"{name}_{k}"] for k in ("top1", "top5", "loss", "num_samples") if f"{name}_{k}" in metrics
        }
        reports[name] = metrics
        if evaluator.is_world_process_zero():
            write_report(
                path_inside(output_dir, f"eval_{name}.json"),
                name,
                metrics,
                model=model_name,
                mode=mode,
                num_labels=config.num_labels,
                class_subset=subset,
            )
            logger.info(f"{name}: " + json.dumps({k: round(v, 4) for k, v in metrics.items()}))
    return reports


def check_arguments(model_args, data_args, args, robustness_args) -> None:
    """Combinations that cannot work, refused before any data is read."""
    if model_args.model_name_or_path is None:
        raise ValueError("--model_name_or_path is required: a SupMAE pretraining or fine-tuned checkpoint.")
    if data_args.streaming and args.max_steps <= 0 and args.mode != "eval":
        raise ValueError("--streaming needs --max_steps: a streamed dataset has no length to count epochs in.")
    if args.cache_features and args.mode != "linprobe":
        raise ValueError("--cache_features is for --mode linprobe (the encoder must be frozen).")
    has_data = data_args.dataset_name is not None or data_args.train_dir is not None
    robustness = any(getattr(robustness_args, name) for name in ROBUSTNESS_SETS.values()) or robustness_args.imagenet_c
    if args.mode == "eval" and not (has_data or args.eval_datasets or robustness):
        raise ValueError(
            "--mode eval needs data: --dataset_name / --train_dir / --validation_dir, --eval_datasets "
            "or the robustness sets (--imagenet_c, --imagenet_val, --imagenet_a, ...)."
        )
    if args.few_shot is not None and data_args.streaming:
        raise ValueError("--few_shot samples images per class and needs a map-style dataset, not --streaming.")
    check_robustness_arguments(robustness_args, [spec.partition("=")[0] for spec in args.eval_datasets])
    if args.few_shot is not None and requested(robustness_args):
        raise ValueError(
            "--few_shot with the robustness evaluation (--imagenet_*, --corrupt): evaluate each few-shot model with "
            "--mode eval instead (its mean over seeds is not defined for the mCE's tables)."
        )


def run_few_shot(model_args, data_args, args, data, command=None) -> dict[str, dict]:
    """`run` on `args.few_shot` images per class for each of `args.few_shot_seeds`, each seed in its own
    `K-shot-seed-S` folder; returns (and writes as `few_shot_K.json`) the mean and spread over seeds."""
    output_dir, runs = args.output_dir, []
    seeds = few_shot_seeds(args)
    for seed in seeds:
        indices = few_shot_indices(data.train[data.label_column], args.few_shot, seed)
        args.output_dir, args.seed = path_inside(output_dir, f"{args.few_shot}-shot-seed-{seed}"), seed
        transformers.set_seed(seed)
        runs.append(run(model_args, data_args, args, data, train_indices=indices, command=command))
    args.output_dir = output_dir
    reports = {name: summarize_runs([r[name] for r in runs]) for name in runs[0]}
    write_report(
        path_inside(output_dir, f"few_shot_{args.few_shot}.json"),
        "few-shot",
        reports,
        shots=args.few_shot,
        seeds=seeds,
        mode=args.mode,
        model=model_args.model_name_or_path,
    )
    return reports


def few_shot_seeds(args) -> list[int]:
    """The seeds of `--few_shot_seeds` ("0,1,2"), each naming its run's folder `K-shot-seed-S`: distinct integers."""
    try:
        seeds = [int(seed) for seed in args.few_shot_seeds.split(",")]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds) or args.few_shot < 1:
        raise ValueError(
            f"--few_shot {args.few_shot} --few_shot_seeds {args.few_shot_seeds!r}: --few_shot takes a positive number "
            "of images per class and --few_shot_seeds distinct comma-separated integers, e.g. 0,1,2 (each names its "
            "run's folder, K-shot-seed-S)."
        )
    return seeds
