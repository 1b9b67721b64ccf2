#!/usr/bin/env python
# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
Semantic segmentation with UperNet on a SupMAE backbone, on the Hugging Face Trainer, with mmsegmentation's MAE
ADE20K recipe as defaults and its evaluation protocol (sliding windows, one confusion matrix over the set).

    python run_segmentation.py                   # the offline demo: digits pasted on canvases (run_pretraining.py first)
    python run_segmentation.py --demo --random_init true --output_dir outputs/digits-segmentation-scratch
    python run_segmentation.py --model_name_or_path PRETRAINED --train_dir ADEChallengeData2016 --bf16 true ...

Defaults: 512x512 crops, batch 16, AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05, layer-wise lr decay 0.65,
1500 warmup steps then a linear (poly, power 1) decay to 0 over 160k steps, drop path 0.1, auxiliary FCN head (weight
0.4); evaluation by 512x512 windows with stride 341 on images rescaled to fit (2048, 512). Every TrainingArguments
option works too (`--help`); `--demo` takes the demo's arguments and lets the flags after it override them.
"""

import json
import logging
import os
import sys

import torch
import transformers

from supmae.arguments import (
    check_output_dir,
    command_of,
    configure_logging,
    demo_arguments,
    finished_run,
    record_finished_run,
    run_script,
)
from supmae.arguments import resume_checkpoint as find_resume_checkpoint
from supmae.data import DIGITS, BadImagePolicy, find_image_column
from supmae.evaluation import write_report
from supmae.model_card import segmentation_model_card
from supmae.segmentation import (
    SupMAESegmentationTrainer,
    prediction_figure,
    save_segmentation_model,
    segmentation_image_processor,
    segmentation_model,
)
from supmae.segmentation_arguments import RECIPE_BATCH, encoder_config, parse_segmentation_arguments
from supmae.segmentation_data import (
    SegmentationDataset,
    SegmentationEvalTransform,
    SegmentationTrainTransform,
    find_mask_column,
    load_segmentation_datasets,
    segmentation_class_names,
)
from supmae.training import SKIPPED_IMAGES, convert_to_sync_batch_norm


logger = logging.getLogger("run_segmentation")

PRETRAINED_DEMO = "outputs/digits-pretrained"
# The pretraining demo's architecture (run_pretraining.py), for the demo without its checkpoint.
DEMO_ARCHITECTURE = (
    "image_size=32,patch_size=4,hidden_size=96,num_hidden_layers=4,num_attention_heads=4,intermediate_size=384"
)
# `python run_segmentation.py`: UperNet on the pretraining demo's encoder, on 64x64 canvases of digits; a few minutes
# on 2 CPU cores. The recipe is lightened for the tiny set: fewer steps, a higher lr, milder rescaling.
DEMO_ARGUMENTS = [
    "--dataset_name", DIGITS,
    "--output_dir", "outputs/digits-segmentation",
    "--crop_size", "64", "--stride", "32", "--scale", "256", "64", "--ratio_range", "0.75", "1.5",
    "--decode_channels", "64", "--auxiliary_channels", "32",
    "--per_device_train_batch_size", "16",
    "--max_steps", "400", "--warmup_steps", "40",
    "--learning_rate", "1e-3", "--layer_decay", "0.75",
    "--eval_strategy", "no", "--save_strategy", "no",
    "--logging_steps", "20",
    "--seed", "0",
    "--dataloader_num_workers", "0",
]  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    demo = not argv or argv[0] == "--demo"
    if demo:
        pretrained = os.path.isfile(os.path.join(PRETRAINED_DEMO, "model.safetensors"))  # a finished run
        source = ["--model_name_or_path", PRETRAINED_DEMO] if pretrained else ["--config_overrides", DEMO_ARCHITECTURE]
        argv = demo_arguments(DEMO_ARGUMENTS + source + argv[1:])
    model_args, data_args, args = parse_segmentation_arguments(argv)
    configure_logging(args, logger)
    if demo and not pretrained:
        logger.warning(f"No {PRETRAINED_DEMO} (run `python run_pretraining.py` first): training from scratch.")
    batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    if batch != RECIPE_BATCH and not demo:
        logger.warning(f"Effective batch {batch} (the recipe's is {RECIPE_BATCH}: 2 crops on each of 8 GPUs), at the "
                       f"recipe's learning rate {args.learning_rate:g} unless --learning_rate says otherwise.")  # fmt: skip
    config = encoder_config(model_args)  # a wrong preset or field fails here, before any data is read
    command = command_of(argv)
    previous = finished_run(args.output_dir, command)
    if previous is not None:
        logger.warning(f"{args.output_dir} already holds a finished run of this command: reporting its results "
                       "instead of training again (remove it, or choose another --output_dir, to train anew).")  # fmt: skip
        report_results(args.output_dir, **previous["results"])
        return previous["results"]["metrics"]
    transformers.set_seed(args.seed)

    # Data
    splits = load_segmentation_datasets(data_args.dataset_name, data_args.dataset_config_name, data_args.train_dir,
                                        data_args.dataset_revision, data_args.cache_dir,
                                        data_args.dataset_data_dir)  # fmt: skip
    train, validation = splits["train"], splits.get("validation")
    if validation is None and data_args.train_val_split > 0:
        held_out = train.train_test_split(data_args.train_val_split, seed=args.seed)
        train, validation = held_out["train"], held_out["test"]
    train = train.select(range(min(data_args.max_train_samples or len(train), len(train))))
    if validation is not None and data_args.max_eval_samples:
        validation = validation.select(range(min(data_args.max_eval_samples, len(validation))))
    image_column = find_image_column(train, data_args.image_column_name)
    mask_column = find_mask_column(train, data_args.mask_column_name, image_column)
    id2label, reduce_labels = segmentation_class_names(
        data_args.dataset_name, data_args.train_dir, data_args.id2label, data_args.num_labels,
        data_args.reduce_zero_label, data_args.cache_dir,
    )  # fmt: skip

    # Model
    resume = find_resume_checkpoint(args)
    model, report = segmentation_model(
        model_args.model_name_or_path, id2label, args.crop_size, config=config, random_init=model_args.random_init,
        drop_path_rate=model_args.drop_path_rate, decode_channels=model_args.decode_channels,
        auxiliary_channels=model_args.auxiliary_channels, cache_dir=data_args.cache_dir,
    )  # fmt: skip
    check_output_dir(args, model)
    if args.sync_batch_norm and args.world_size > 1 and torch.cuda.is_available():
        model = convert_to_sync_batch_norm(model)
    image_processor = segmentation_image_processor(args.crop_size, reduce_labels)
    bad_images = BadImagePolicy(data_args.bad_images, os.path.join(args.output_dir, SKIPPED_IMAGES))
    train_transform = SegmentationTrainTransform(
        (args.crop_size, args.crop_size), tuple(data_args.scale), tuple(data_args.ratio_range),
        data_args.cat_max_ratio, data_args.photometric_distortion,
    )  # fmt: skip
    eval_transform = SegmentationEvalTransform(tuple(data_args.scale))
    common = {"reduce_labels": reduce_labels, "seed": args.seed, "bad_images": bad_images, "num_labels": len(id2label)}
    datasets = {
        # An unreadable pair is replaced in training, left out in evaluation (which scores each readable image once).
        name: SegmentationDataset(split, image_column, mask_column, transform, substitute=name == "train", **common)
        for name, split, transform in (("train", train, train_transform), ("validation", validation, eval_transform))
        if split is not None
    }
    if "validation" not in datasets:
        args.eval_strategy = "no"
    trainer = SupMAESegmentationTrainer(
        model=model, args=args, train_dataset=datasets["train"], eval_dataset=datasets.get("validation"),
        processing_class=image_processor, layer_decay=args.layer_decay, crop_size=args.crop_size,
        stride=args.stride, windows_per_batch=args.windows_per_batch,
    )  # fmt: skip

    trainer.train(resume_from_checkpoint=resume)
    metrics = trainer.evaluate() if "validation" in datasets else {}
    if trainer.is_world_process_zero():
        save_segmentation_model(trainer.accelerator.unwrap_model(model), args.output_dir, image_processor)
        trainer.save_state()
        write_report(os.path.join(args.output_dir, "eval_validation.json"), "validation", metrics,
                     model=model_args.model_name_or_path, classes=[id2label[i] for i in range(len(id2label))],
                     weights=report)  # fmt: skip
        card = segmentation_model_card(
            model.config, dataset=data_args.dataset_name or data_args.train_dir, metrics=metrics, report=report,
            training={"iterations": args.max_steps, "batch per process": args.per_device_train_batch_size,
                      "learning rate": args.learning_rate, "layer decay": args.layer_decay,
                      "crop": args.crop_size, "evaluation stride": args.stride, "seed": args.seed},
            base_model=None if model_args.random_init else model_args.model_name_or_path,
        )  # fmt: skip
        with open(os.path.join(args.output_dir, "README.md"), "w") as file:
            file.write(card)
        figure = None
        if demo:
            figure = os.path.join(args.output_dir, "predictions.png")
            model = trainer.accelerator.unwrap_model(model)
            prediction_figure(model, datasets["validation"], args.crop_size, args.stride, args.device).save(figure)
        record_finished_run(args.output_dir, command, {"metrics": metrics, "figure": figure})
        report_results(args.output_dir, metrics, figure)
    return metrics


def report_results(output_dir: str, metrics: dict, figure: str | None) -> None:
    """What a finished run prints: the figure, the validation mIoU, mAcc and aAcc, and where everything went."""
    if figure:
        print(f"Figure (image | ground truth | prediction): {figure}")
    if metrics:
        print("validation: " + json.dumps({k.removeprefix("eval_"): round(v, 4) for k, v in metrics.items()
                                           if k in ("eval_mean_iou", "eval_mean_accuracy", "eval_overall_accuracy")}))  # fmt: skip
    print(f"Written to {os.path.abspath(output_dir)}")


if __name__ == "__main__":
    run_script(main)
