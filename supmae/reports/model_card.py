# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Model cards: the README.md, with Hub metadata, of every directory this package writes.

One renderer for every card: the pretraining, classification and segmentation directories the training tasks write,
and the checkpoints `supmae.interop.convert` converts. A card is Hub metadata, built with huggingface_hub's
`ModelCardData` (so it is the YAML the Hub reads), followed by a markdown body: a template of `templates/<name>.md`
(shipped in the package) whose `{{field}}` placeholders are filled with text.

```python
from supmae.reports.model_card import card_metadata, render

text = render("converted-mae", card_metadata("image-feature-extraction", ["supmae"], license="cc-by-nc-4.0"), ...)
```

- Every placeholder must be given a value, and every value must be used: a missing field or a field the template does
  not know (a typo) raises `KeyError` naming it. `placeholders(name)` lists a template's fields. Values are inserted
  as given (markdown), once: text inside a value is not read as a placeholder.
- The licence of trained weights follows the weights they started from (`weights_license`): a model fine-tuned from a
  converted official checkpoint keeps its CC-BY-NC-4.0; a model trained from scratch gets `--license`, by default
  `PROJECT_LICENSE`.
- `datasets` and `base_model` name Hub repositories only (`hub_id`): a local folder or file, which means nothing on the
  Hub and would publish a path of this machine, is described in the body instead.
"""

import logging
import os
import re
import shlex
import sys
from importlib.resources import files
from typing import NamedTuple

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..data.sources import DIGITS


logger = logging.getLogger(__name__)

TEMPLATES: tuple[str, ...] = (
    "pretraining",
    "classification",
    "segmentation",
    "converted-supmae-pretrain",
    "converted-supmae-finetuned",
    "converted-mae",
)

# The licence of weights trained here from random initialization, unless --license says otherwise: the project's own
# (its code is Apache-2.0), so that a user's model is as free to use as the code that trained it.
PROJECT_LICENSE = "apache-2.0"
# The licence of the authors' released SupMAE weights and of Facebook's released MAE weights.
OFFICIAL_LICENSE = "cc-by-nc-4.0"
# The Hub's licence for "none of the listed ones": what a card says when the starting weights declare no licence.
UNDECLARED_LICENSE = "other"

CITATION = """@article{liang2022supmae,
  title   = {Supervised Masked Autoencoders Are Efficient Vision Learners},
  author  = {Liang, Feng and Li, Yangguang and Marculescu, Diana},
  journal = {arXiv preprint arXiv:2205.14540},
  year    = {2022}
}"""

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


# ------------------------------------------------------------------------------------------------------ rendering


def template_text(template: str) -> str:
    """The raw body of a template, placeholders unfilled."""
    if template not in TEMPLATES:
        raise ValueError(f"Unknown model-card template {template!r}; the templates are {', '.join(TEMPLATES)}.")
    return files(__package__).joinpath("templates", f"{template}.md").read_text(encoding="utf-8")


def placeholders(template: str) -> frozenset[str]:
    """The names of the fields a template needs."""
    return frozenset(_PLACEHOLDER.findall(template_text(template)))


def render(template: str, metadata: ModelCardData, **fields: str) -> str:
    """The card: `metadata` as YAML front matter, then the body `template` (one of `TEMPLATES`) with every
    `{{name}}` replaced by `fields[name]`.

    Raises `KeyError` naming the placeholders left unfilled and the fields the template does not use, `TypeError` for
    a value that is not a string."""
    text = template_text(template)
    used = set(_PLACEHOLDER.findall(text))
    missing, unknown = sorted(used - fields.keys()), sorted(fields.keys() - used)
    if missing or unknown:
        problems = [f"missing field(s) {', '.join(missing)}"] if missing else []
        problems += [f"unknown field(s) {', '.join(unknown)}"] if unknown else []
        raise KeyError(
            f"Model-card template {template!r}: {'; '.join(problems)}. It takes exactly: {', '.join(sorted(used))}."
        )
    for name, value in fields.items():
        if not isinstance(value, str):
            raise TypeError(f"Model-card field {name!r} must be a string, not {type(value).__name__}.")
    body = _PLACEHOLDER.sub(lambda match: fields[match.group(1)], text)  # one pass: values are not re-read
    return f"---\n{metadata.to_yaml()}\n---\n\n{body.lstrip()}"


def card_metadata(
    pipeline_tag: str,
    tags: list[str],
    *,
    license: str,
    datasets: list[str | None] = (),
    base_model: str | None = None,
) -> ModelCardData:
    """The Hub metadata of a card. `datasets` and `base_model` may be anything a user passed (a Hub name, a local
    path, the built-in digits, None): only Hub names are kept (`hub_id`)."""
    hub_datasets = [name for name in map(hub_id, datasets) if name is not None]
    return ModelCardData(
        license=license,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=tags,
        datasets=hub_datasets or None,
        base_model=hub_id(base_model),
    )


def hub_id(name: str | None) -> str | None:
    """`name` when it names a Hub repository (`user/name` or `name`); None for a local file or folder (one that exists
    here, or anything written as a path), for the built-in digits and for None."""
    if not name or name == DIGITS or os.path.exists(name):
        return None
    try:
        validate_repo_id(name)  # refuses what is written as a path: "/data", "./data", "~/data", "a/b/c", "C:\\data"
    except HFValidationError:
        return None
    return name


def _data_phrase(name: str | None) -> str:
    """How the body names the training data: a Hub dataset by its name, local data by its folder's name only."""
    if name == DIGITS:
        return "the built-in `digits` images (scikit-learn's 8x8 digits, upsampled)"
    if hub_id(name) is not None:
        return f"[`{name}`](https://huggingface.co/datasets/{name})"
    return f"local data (`{os.path.basename(os.path.normpath(name))}`)" if name else "(no dataset given)"


def _source_phrase(name: str | None) -> str:
    """How the body names the weights a run started from, without a local path."""
    if name is None:
        return "random initialization"
    return name if hub_id(name) is not None else os.path.basename(os.path.normpath(name))


# -------------------------------------------------------------------------------------------------------- licences


class WeightsLicense(NamedTuple):
    license: str  # the Hub's licence identifier, for the metadata
    note: str  # where it comes from, for the body


def source_license(model_name_or_path: str) -> str | None:
    """The licence declared in the model card of the weights at `model_name_or_path`: a local directory's README.md
    (for a `checkpoint-N` folder without one, its run directory's), or a Hub model's card (from the local cache, or
    downloaded). None when there is no card or it declares no licence."""
    if os.path.isdir(model_name_or_path):
        directory = os.path.normpath(model_name_or_path)
        path = os.path.join(directory, "README.md")
        if not os.path.isfile(path) and os.path.basename(directory).startswith("checkpoint-"):
            path = os.path.join(os.path.dirname(directory), "README.md")  # a checkpoint of a run that wrote a card
    elif hub_id(model_name_or_path) is not None:
        from huggingface_hub import hf_hub_download

        try:
            path = hf_hub_download(model_name_or_path, "README.md")
        except Exception as error:  # offline, no card, gated: the licence is unknown, which the card says
            logger.warning(f"Could not read the model card of {model_name_or_path} for its licence: {error}")
            return None
    else:
        return None
    if not os.path.isfile(path):
        return None
    return ModelCard.load(path).data.license


def weights_license(model_name_or_path: str | None, chosen: str | None = None) -> WeightsLicense:
    """The licence of weights trained from `model_name_or_path` (None: from random initialization).

    Weights started from a checkpoint whose card declares a licence keep it (CC-BY-NC-4.0 for the official weights,
    through conversion, fine-tuning and segmentation); `chosen` (--license) then cannot replace it and a warning says
    so. Otherwise the licence is `chosen`, else `PROJECT_LICENSE` from scratch, else `UNDECLARED_LICENSE`."""
    if model_name_or_path is None:
        if chosen:
            return WeightsLicense(
                chosen, f"`{chosen}` (chosen with --license); trained here from random initialization."
            )
        return WeightsLicense(
            PROJECT_LICENSE,
            f"`{PROJECT_LICENSE}`, this project's default for weights trained here from random initialization "
            "(choose another with --license).",
        )
    source = _source_phrase(model_name_or_path)
    inherited = source_license(model_name_or_path)
    if inherited:
        if chosen and chosen != inherited:
            logger.warning(
                f"--license {chosen} is not used: the weights start from {model_name_or_path}, whose card declares "
                f"the licence {inherited}, which the trained weights keep."
            )
        return WeightsLicense(inherited, f"`{inherited}`, the licence of the weights it started from (`{source}`).")
    if chosen:
        return WeightsLicense(
            chosen, f"`{chosen}` (chosen with --license); the weights it started from (`{source}`) declare none."
        )
    return WeightsLicense(
        UNDECLARED_LICENSE,
        f"not known: the weights it started from (`{source}`) declare no licence in a model card, so the metadata says "
        f"`{UNDECLARED_LICENSE}`; check theirs, and set it with --license.",
    )


# ----------------------------------------------------------------------------------------------- the parts of a body


def _command(command: list[str] | None) -> str:
    return shlex.join(command if command is not None else [os.path.basename(sys.argv[0]), *sys.argv[1:]])


def _metrics_table(metrics: dict[str, float]) -> str:
    rows = "\n".join(f"| {name} | {value:.4g} |" for name, value in metrics.items() if isinstance(value, float | int))
    return "| metric | value |\n|---|---|\n" + rows if rows else "(no evaluation was run)"


def _settings(training: dict[str, object]) -> str:
    return "\n".join(f"- {name}: {value}" for name, value in training.items())


def _classes(config) -> str:
    return ", ".join(list(config.id2label.values())[:20]) + (", ..." if config.num_labels > 20 else "")


# ------------------------------------------------------------------------------------------------------ the cards


def pretraining_model_card(
    config,
    *,
    dataset: str | None,
    metrics: dict[str, float],
    training: dict[str, object],
    figure: str | None = None,
    base_model: str | None = None,
    command: list[str] | None = None,
    license: str | None = None,
) -> str:
    """README.md for a `SupMAEForPreTraining` directory written by run_pretraining.py, trained on `dataset` (a Hub
    name or a local path) from `base_model` (None: from scratch); `license` is --license (see `weights_license`)."""
    weights = weights_license(base_model, license)
    labels = (
        "with labels (SupMAE)" if config.supervised_loss_weight and training.get("labels") else "without labels (MAE)"
    )
    height, width = config.grid_size
    metadata = card_metadata(
        "image-feature-extraction",
        ["supmae", "mae", "vision", "self-supervised", "masked-image-modeling"],
        license=weights.license,
        datasets=[dataset],
        base_model=base_model,
    )
    return render(
        "pretraining",
        metadata,
        dataset=_data_phrase(dataset),
        labels=labels,
        encoder=(
            f"{config.num_hidden_layers} layers, {config.hidden_size} wide, {config.num_attention_heads} heads, patch "
            f"{config.patch_size}, {config.image_size} px ({height}x{width} patches)"
        ),
        decoder=(
            f"{config.decoder_num_hidden_layers} block(s), {config.decoder_hidden_size} wide. Mask ratio "
            f"{config.mask_ratio}, normalized-pixel loss: {config.norm_pix_loss}"
        ),
        supervised_head=(
            f"hidden size {config.supervised_head_hidden_size}, {config.num_labels} classes, loss weight "
            f"{config.supervised_loss_weight}, temperature {config.supervised_temperature}"
        ),
        license_note=weights.note,
        metrics=_metrics_table(metrics),
        settings=_settings(training),
        command=_command(command),
        figure_section=(
            f"\n## Reconstructions\n\n![original, masked, reconstruction, visible pasted back]({figure})\n"
            if figure
            else ""
        ),
        citation=CITATION,
    )


def classification_model_card(
    config,
    *,
    mode: str,
    dataset: str | None,
    reports: dict[str, dict],
    training: dict[str, object],
    base_model: str | None = None,
    command: list[str] | None = None,
    license: str | None = None,
) -> str:
    """README.md for a `SupMAEForImageClassification` directory written by run_classification.py; `reports` maps an
    evaluation set's name to its metrics, `license` is --license (see `weights_license`)."""
    weights = weights_license(base_model, license)
    metadata = card_metadata(
        "image-classification",
        ["supmae", "vision", "image-classification"],
        license=weights.license,
        datasets=[dataset],
        base_model=base_model,
    )
    batch_norm = " + BatchNorm" if config.classifier_batch_norm else ""
    return render(
        "classification",
        metadata,
        how={"finetune": "fine-tuned (MAE's recipe)", "linprobe": "linearly probed (frozen encoder)"}.get(mode, mode),
        dataset=_data_phrase(dataset),
        source=_source_phrase(base_model),
        encoder=(
            f"{config.num_hidden_layers} layers, {config.hidden_size} wide, patch {config.patch_size}, "
            f"{config.image_size} px"
        ),
        head=(
            f"{config.classifier_pooling} pooling{batch_norm} + Linear, {config.num_labels} classes ({_classes(config)})"
        ),
        license_note=weights.note,
        results="\n\n".join(f"### {name}\n\n{_metrics_table(metrics)}" for name, metrics in reports.items())
        or "(no evaluation was run)",
        settings=_settings(training),
        command=_command(command),
        citation=CITATION,
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
    license: str | None = None,
) -> str:
    """README.md for an `UperNetForSemanticSegmentation` directory with a SupMAE backbone (run_segmentation.py);
    `base_model` is the backbone's checkpoint (None: random initialization), `license` is --license."""
    weights = weights_license(base_model, license)
    backbone = config.backbone_config
    metadata = card_metadata(
        "image-segmentation",
        ["supmae", "vision", "image-segmentation", "upernet"],
        license=weights.license,
        datasets=[dataset],
        base_model=base_model,
    )
    return render(
        "segmentation",
        metadata,
        dataset=_data_phrase(dataset),
        backbone=(
            f"{backbone.num_hidden_layers} layers, {backbone.hidden_size} wide, patch {backbone.patch_size}, stages "
            f"{', '.join(backbone.out_features)} with MAE's feature pyramid; {backbone.image_size} px crops"
        ),
        heads=(
            f"UperNet decode head ({config.hidden_size} wide) and auxiliary FCN head; {config.num_labels} classes "
            f"({_classes(config)})"
        ),
        report=report,
        license_note=weights.note,
        metrics=_metrics_table(
            {k.removeprefix("eval_"): v for k, v in metrics.items() if not k.endswith(("_runtime", "_per_second"))}
        ),
        settings=_settings(training),
        command=_command(command),
        citation=CITATION,
    )


def converted_model_card(config, report, *, command: str, repo_id: str) -> str:
    """README.md for a directory written by `supmae.interop.convert`: `report` is its `ConversionReport` (read for
    `checkpoint`, `source`, `task`, `md5` and its text). The authors' SupMAE releases get their own cards; any other
    MAE checkpoint the MAE one. Official weights carry CC-BY-NC-4.0; a ViTMAE directory the licence its card
    declares, else `UNDECLARED_LICENSE`."""
    architecture = (
        f"ViT, {config.num_hidden_layers} layers, {config.hidden_size} wide, {config.num_attention_heads} heads, patch "
        f"{config.patch_size}, {config.image_size} px"
    )
    if report.task == "pretraining":
        architecture += f"; decoder {config.decoder_num_hidden_layers} block(s), {config.decoder_hidden_size} wide"
    source_file = os.path.basename(os.path.normpath(report.checkpoint))
    official = report.source.startswith("an official")
    if report.source.startswith("an official SupMAE pretraining"):
        template, pipeline_tag, datasets = "converted-supmae-pretrain", "image-feature-extraction", ["imagenet-1k"]
        tags = ["supmae", "mae", "vision", "self-supervised", "masked-image-modeling", "vit"]
    elif report.task == "classification":
        template, pipeline_tag, datasets = "converted-supmae-finetuned", "image-classification", ["imagenet-1k"]
        tags = ["supmae", "mae", "vision", "image-classification", "vit"]
    else:
        template, pipeline_tag, datasets = "converted-mae", "image-feature-extraction", []
        tags = ["supmae", "mae", "vision", "self-supervised", "masked-image-modeling", "vit"]
    # The converter reads local files and folders only, which are no Hub models: no base_model; the body names the
    # source file instead.
    license = OFFICIAL_LICENSE if official else source_license(report.checkpoint) or UNDECLARED_LICENSE
    metadata = card_metadata(pipeline_tag, tags, license=license, datasets=datasets)
    return render(
        template,
        metadata,
        repo_id=repo_id,
        source_file=source_file,
        source_md5=report.md5 or "(a directory: no single file to hash)",
        conversion_command=command,
        conversion_report=str(report),
        architecture=architecture,
    )
