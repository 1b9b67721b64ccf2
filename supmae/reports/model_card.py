# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Model cards (README.md with Hub metadata) for the directories the training scripts write."""

import os
import shlex
import sys

import yaml


CITATION = """@article{liang2022supmae,
  title   = {Supervised Masked Autoencoders Are Efficient Vision Learners},
  author  = {Liang, Feng and Li, Yangguang and Marculescu, Diana},
  journal = {arXiv preprint arXiv:2205.14540},
  year    = {2022}
}"""


def _metadata(tags: list[str], pipeline_tag: str, dataset: str | None, base_model: str | None) -> str:
    metadata = {"library_name": "transformers", "pipeline_tag": pipeline_tag, "tags": tags}
    if dataset and not os.path.exists(dataset):  # a Hub dataset, not a local path
        metadata["datasets"] = [dataset]
    if base_model and not os.path.exists(base_model):
        metadata["base_model"] = base_model
    return "---\n" + yaml.safe_dump(metadata, sort_keys=False) + "---\n"


def _metrics_table(metrics: dict[str, float]) -> str:
    rows = "\n".join(f"| {name} | {value:.4g} |" for name, value in metrics.items() if isinstance(value, float | int))
    return "| metric | value |\n|---|---|\n" + rows if rows else "(no evaluation was run)"


def pretraining_model_card(
    config,
    *,
    dataset: str,
    metrics: dict[str, float],
    training: dict[str, object],
    figure: str | None = None,
    base_model: str | None = None,
    command: list[str] | None = None,
) -> str:
    """README.md for a `SupMAEForPreTraining` directory written by run_pretraining.py."""
    command = shlex.join(command if command is not None else [os.path.basename(sys.argv[0]), *sys.argv[1:]])
    labels = (
        "with labels (SupMAE)" if config.supervised_loss_weight and training.get("labels") else "without labels (MAE)"
    )
    height, width = config.grid_size
    figure_section = (
        f"\n## Reconstructions\n\n![original, masked, reconstruction, visible pasted back]({figure})\n"
        if figure
        else ""
    )
    settings = "\n".join(f"- {name}: {value}" for name, value in training.items())
    return (
        _metadata(
            ["supmae", "mae", "vision", "self-supervised", "masked-image-modeling"],
            "image-feature-extraction",
            dataset,
            base_model,
        )
        + f"""
# SupMAE pretraining checkpoint

A SupMAE ([Supervised Masked Autoencoders](https://arxiv.org/abs/2205.14540)) ViT encoder, pixel decoder and
supervised head, pretrained on `{dataset}` {labels} with the `supmae` package.

- Encoder: {config.num_hidden_layers} layers, {config.hidden_size} wide, {config.num_attention_heads} heads, patch
  {config.patch_size}, {config.image_size} px ({height}x{width} patches).
- Decoder: {config.decoder_num_hidden_layers} block(s), {config.decoder_hidden_size} wide. Mask ratio
  {config.mask_ratio}, normalized-pixel loss: {config.norm_pix_loss}.
- Supervised head: hidden size {config.supervised_head_hidden_size}, {config.num_labels} classes, loss weight
  {config.supervised_loss_weight}, temperature {config.supervised_temperature}.

## Evaluation (validation split, fixed masks)

{_metrics_table(metrics)}

## Training

{settings}

Command: `{command}`
{figure_section}
## Use

```python
from transformers import AutoModel, AutoModelForImageClassification, pipeline

features = pipeline("image-feature-extraction", model="<this directory or repo>", trust_remote_code=True)
classifier = AutoModelForImageClassification.from_pretrained("<this directory or repo>", num_labels=10,
                                                             trust_remote_code=True)  # then fine-tune
```

`trust_remote_code=True` is needed only where the `supmae` package is not installed.

## Citation

```bibtex
{CITATION}
```
"""
    )


def classification_model_card(
    config,
    *,
    mode: str,
    dataset: str,
    reports: dict[str, dict],
    training: dict[str, object],
    base_model: str | None = None,
    command: list[str] | None = None,
) -> str:
    """README.md for a `SupMAEForImageClassification` directory written by run_classification.py; `reports` maps an
    evaluation set's name to its metrics."""
    command = shlex.join(command if command is not None else [os.path.basename(sys.argv[0]), *sys.argv[1:]])
    how = {"finetune": "fine-tuned (MAE's recipe)", "linprobe": "linearly probed (frozen encoder)"}.get(mode, mode)
    results = "\n\n".join(f"### {name}\n\n{_metrics_table(metrics)}" for name, metrics in reports.items())
    settings = "\n".join(f"- {name}: {value}" for name, value in training.items())
    classes = ", ".join(list(config.id2label.values())[:20]) + (", ..." if config.num_labels > 20 else "")
    return (
        _metadata(["supmae", "vision", "image-classification"], "image-classification", dataset, base_model)
        + f"""
# SupMAE image classifier

A SupMAE ([Supervised Masked Autoencoders](https://arxiv.org/abs/2205.14540)) ViT, {how} on `{dataset}` with the
`supmae` package, from `{base_model}`.

- Encoder: {config.num_hidden_layers} layers, {config.hidden_size} wide, patch {config.patch_size}, {config.image_size} px.
- Head: {config.classifier_pooling} pooling{" + BatchNorm" if config.classifier_batch_norm else ""} + Linear,
  {config.num_labels} classes ({classes}).

## Results (top-k accuracy, fractions)

{results or "(no evaluation was run)"}

## Training

{settings}

Command: `{command}`

## Use

```python
from transformers import pipeline

classify = pipeline("image-classification", model="<this directory or repo>", trust_remote_code=True)
classify("cat.jpg")
```

`trust_remote_code=True` is needed only where the `supmae` package is not installed.

## Citation

```bibtex
{CITATION}
```
"""
    )


def segmentation_model_card(
    config,
    *,
    dataset: str | None,
    metrics: dict,
    report: str,
    training: dict[str, object],
    base_model: str | None = None,
    command: list[str] | None = None,
) -> str:
    """README.md for an `UperNetForSemanticSegmentation` directory with a SupMAE backbone (run_segmentation.py)."""
    command = shlex.join(command if command is not None else [os.path.basename(sys.argv[0]), *sys.argv[1:]])
    backbone = config.backbone_config
    settings = "\n".join(f"- {name}: {value}" for name, value in training.items())
    classes = ", ".join(list(config.id2label.values())[:20]) + (", ..." if config.num_labels > 20 else "")
    scalars = {k.removeprefix("eval_"): v for k, v in metrics.items() if isinstance(v, float | int)}
    return (
        _metadata(["supmae", "vision", "image-segmentation", "upernet"], "image-segmentation", dataset, base_model)
        + f"""
# UperNet with a SupMAE backbone

UperNet on a SupMAE ([Supervised Masked Autoencoders](https://arxiv.org/abs/2205.14540)) ViT, trained for semantic
segmentation on `{dataset}` with the `supmae` package.

- Backbone: {backbone.num_hidden_layers} layers, {backbone.hidden_size} wide, patch {backbone.patch_size}, stages
  {", ".join(backbone.out_features)} with MAE's feature pyramid; {backbone.image_size} px crops.
- Heads: UperNet decode head ({config.hidden_size} wide) and auxiliary FCN head; {config.num_labels} classes
  ({classes}).
- Weights: {report}

## Results (validation, sliding-window evaluation, fractions)

mIoU, mAcc and aAcc from one confusion matrix over the whole set, predictions resized to the original annotations.

{_metrics_table(scalars)}

## Training

{settings}

Command: `{command}`

## Use

```python
from transformers import pipeline

segment = pipeline("image-segmentation", model="<this directory or repo>", trust_remote_code=True)
segment("street.jpg")  # one mask per class found; resizes the image to the crop size (no sliding window)
```

`trust_remote_code=True` is needed only where the `supmae` package is not installed. The scores above come from the
sliding-window evaluation of `supmae.segmentation`, which the pipeline does not do.

## Citation

```bibtex
{CITATION}
```
"""
    )
