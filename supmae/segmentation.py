# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Semantic segmentation with UperNet on a SupMAE backbone, evaluated as mmsegmentation does ADE20K.

- `segmentation_model`: UperNet from a SupMAE checkpoint (pretraining, fine-tuned classifier, converted official
  MAE / SupMAE), whose encoder goes into the backbone with a one-sentence report; from a saved segmentation
  directory; or from a config with random weights.
- `sliding_window_logits`: mmsegmentation's "slide" inference (windows of the crop size, averaged where they overlap).
- `SupMAESegmentationTrainer`: MAE's layer-wise lr decay, the decode and auxiliary losses logged apart, and an
  evaluation that accumulates one confusion matrix over the whole set (mIoU, mAcc, aAcc).
- `save_segmentation_model`: a Hub-ready directory (weights, config with id2label, image processor, remote code).
- `segmentation_figure`: image | ground truth | prediction, one row per image.

Shapes: B images, K classes, H x W pixels.
"""

import glob
import os
import shutil
import time

import numpy as np
import PIL.Image
import safetensors.torch
import torch
import torch.nn.functional as F
from transformers import PreTrainedConfig, SegformerImageProcessor, UperNetConfig, UperNetForSemanticSegmentation
from transformers.utils import logging

from .configuration_supmae import SupMAEConfig, mae_dense_prediction_stages
from .data import IMAGENET_MEAN, IMAGENET_STD
from .evaluation import metrics_from_confusion_matrix, segmentation_confusion_matrix
from .modeling_supmae import SEGMENTATION_REMOTE_CODE_AUTO_MAP, SupMAEBackbone, interpolate_position_embeddings
from .segmentation_data import IGNORE_INDEX, segmentation_collator
from .training import SupMAEBaseTrainer, layer_decay_adamw


logger = logging.get_logger(__name__)

# The encoder's architecture, carried from a checkpoint into the backbone (the rest of its config is pretraining's).
ENCODER_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
                  "initializer_range", "layer_norm_eps", "patch_size", "num_channels", "qkv_bias")  # fmt: skip
_CHECKPOINT_KINDS = {
    "SupMAEForPreTraining": "the SupMAE pretraining checkpoint",
    "SupMAEForImageClassification": "the fine-tuned SupMAE classifier",
    "SupMAEModel": "the SupMAE encoder",
}


# ---------------------------------------------------------------------------------------------------------------
# Building and loading
# ---------------------------------------------------------------------------------------------------------------


def upernet_config(backbone_config: SupMAEConfig, id2label: dict[int, str], decode_channels: int = 768,
                   auxiliary_channels: int = 256, auxiliary_loss_weight: float = 0.4) -> UperNetConfig:  # fmt: skip
    """mmsegmentation's UperNet for MAE: pool scales (1, 2, 3, 6), a `decode_channels`-wide UPerHead (768), and an FCN
    auxiliary head on the third map (256 wide, loss weight 0.4); 255 is ignored."""
    return UperNetConfig(
        backbone_config=backbone_config,
        hidden_size=decode_channels,
        auxiliary_channels=auxiliary_channels,
        auxiliary_loss_weight=auxiliary_loss_weight,
        use_auxiliary_head=True,
        loss_ignore_index=IGNORE_INDEX,
        num_labels=len(id2label),
        id2label=dict(id2label),
        label2id={name: index for index, name in id2label.items()},
    )


def backbone_config_from(encoder_config: SupMAEConfig, image_size: int, drop_path_rate: float = 0.1) -> SupMAEConfig:
    """The backbone of `encoder_config`'s architecture for `image_size` crops: MAE's four blocks, named explicitly
    (a backbone's default is its last block only), into MAE's feature pyramid."""
    if image_size % encoder_config.patch_size:
        raise ValueError(
            f"--crop_size {image_size} is not a multiple of the encoder's patch size ({encoder_config.patch_size}): "
            f"crops of {image_size // encoder_config.patch_size * encoder_config.patch_size} or "
            f"{(image_size // encoder_config.patch_size + 1) * encoder_config.patch_size} pixels would do."
        )
    fields = {name: getattr(encoder_config, name) for name in ENCODER_FIELDS}
    # num_labels=1: the backbone classifies nothing, and 1000 label names would fill UperNet's config.json.
    stages = mae_dense_prediction_stages(encoder_config.num_hidden_layers)
    return SupMAEConfig(**fields, image_size=image_size, drop_path_rate=drop_path_rate, out_features=stages,
                        add_fpn=True, num_labels=1, attn_implementation=encoder_config._attn_implementation)  # fmt: skip


def checkpoint_weights(source: str, **hub_kwargs) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors files of a local directory or Hub repository."""
    if os.path.isdir(source):
        directory = source
    else:
        from huggingface_hub import snapshot_download

        directory = snapshot_download(source, allow_patterns=["*.safetensors", "*.json"], **hub_kwargs)
    files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
    if not files:
        raise FileNotFoundError(
            f"{source} holds no weights (*.safetensors). Convert official .pth checkpoints with `supmae-convert` first."
        )
    state = {}
    for path in files:
        try:
            state.update(safetensors.torch.load_file(path))
        except Exception as error:  # safetensors raises its own error types
            raise OSError(
                f"Could not read the weights {path}: {error}. The file is truncated or damaged; save or download it "
                "again."
            ) from error
    return state


def load_encoder_weights(backbone: SupMAEBackbone, source: str, encoder_config: SupMAEConfig, **hub_kwargs) -> str:
    """
    Put the encoder of a SupMAE checkpoint into `backbone`: the embeddings and every block, the position table
    resized bicubically to the backbone's patch grid. The decoder, the pretraining head, the final LayerNorm and a
    classification head are dropped. Returns the one-sentence report, which is also logged. A checkpoint that lacks
    an encoder tensor, holds one of another shape, or holds tensors of unknown parts is refused, naming them.
    """
    state = checkpoint_weights(source, **hub_kwargs)
    if not any(key.startswith("supmae.") for key in state):  # a bare SupMAEModel
        state = {f"supmae.{key}": tensor for key, tensor in state.items()}
    target = backbone.supmae.state_dict()
    reused, dropped, unknown = {}, {}, []
    for key, tensor in state.items():
        name = key.removeprefix("supmae.")
        part = next((d for p, d in backbone._dropped_on_transfer.items() if key.startswith(p)), None)
        if key.startswith("supmae.") and name in target:
            reused[name] = tensor
        elif part is not None:
            dropped[part] = dropped.get(part, 0) + 1
        else:
            unknown.append(key)
    missing = sorted(set(target) - set(reused))
    if unknown or missing:
        raise ValueError(
            f"{source} does not hold a SupMAE encoder that fits the backbone: "
            + (f"unknown tensors {unknown[:5]}" if unknown else "")
            + ("; " if unknown and missing else "")
            + (f"missing {missing[:5]}" if missing else "")
            + "."
        )
    table = "embeddings.position_embeddings"
    old_grid, new_grid = encoder_config.grid_size, backbone.config.grid_size
    if reused[table].shape[1] != old_grid[0] * old_grid[1] + 1:
        raise ValueError(f"The position table of {source} has {reused[table].shape[1] - 1} rows; its config's "
                         f"{encoder_config.image_size} px images make {old_grid[0]}x{old_grid[1]} patches.")  # fmt: skip
    reused[table] = interpolate_position_embeddings(reused[table], old_grid, new_grid)
    wrong = [
        f"{k}: {tuple(v.shape)} vs {tuple(target[k].shape)}" for k, v in reused.items() if v.shape != target[k].shape
    ]
    if wrong:
        raise ValueError(f"The encoder of {source} does not fit the backbone's shapes: {wrong[:5]}.")
    backbone.supmae.load_state_dict(reused, strict=True)

    order = [part for part in dict.fromkeys(backbone._dropped_on_transfer.values()) if part in dropped]
    kind = _CHECKPOINT_KINDS.get((encoder_config.architectures or [""])[0], "the SupMAE checkpoint")
    resized = f"; position table resized from {old_grid[0]}x{old_grid[1]} to {new_grid[0]}x{new_grid[1]} patches"
    report = (
        f"UperNetForSemanticSegmentation: reused the encoder of {kind} {source} ({len(reused)} tensors: the "
        f"embeddings and {backbone.config.num_hidden_layers} blocks"
        + (resized if old_grid != new_grid else "")
        + ")"
        + ("; dropped " + ", ".join(f"{part} ({dropped[part]} tensors)" for part in order) if order else "")
        + "; newly initialized: the feature pyramid (neck), the decode head, the auxiliary head."
    )
    logger.warning(report)
    return report


def segmentation_model(source: str | None, id2label: dict[int, str], crop_size: int, *, config: SupMAEConfig | None = None,
                       random_init: bool = False, drop_path_rate: float = 0.1, decode_channels: int = 768,
                       auxiliary_channels: int = 256, **hub_kwargs) -> tuple[UperNetForSemanticSegmentation, str]:  # fmt: skip
    """
    UperNet with a SupMAE backbone for `crop_size` crops and the classes of `id2label`, and a sentence saying where
    its weights came from:

    - `source` a SupMAE checkpoint (pretraining, classifier, encoder; a converted official one): its encoder goes
      into the backbone (`load_encoder_weights`); with `random_init`, only its architecture is used;
    - `source` a saved segmentation directory: loaded whole (a new classifier if its classes differ);
    - `source` None: `config`'s architecture with random weights.
    """
    if source is not None:
        checkpoint, _ = PreTrainedConfig.get_config_dict(source, **hub_kwargs)
        model_type = checkpoint.get("model_type")
        if model_type == UperNetConfig.model_type and random_init:
            raise ValueError(f"{source} is a segmentation checkpoint; random weights start from a SupMAE one.")
        if model_type == UperNetConfig.model_type:
            labels = {int(k): v for k, v in (checkpoint.get("id2label") or {}).items()}
            model = UperNetForSemanticSegmentation.from_pretrained(
                source, id2label=dict(id2label), label2id={v: k for k, v in id2label.items()},
                num_labels=len(id2label), ignore_mismatched_sizes=labels != dict(id2label), **hub_kwargs,
            )  # fmt: skip
            return model, f"UperNetForSemanticSegmentation: continued from the segmentation checkpoint {source}."
        if model_type is None:
            raise ValueError(f"{source} has no config.json with a model_type: is it a saved model directory?")
        if model_type != SupMAEConfig.model_type:
            raise ValueError(
                f"{source} holds a {model_type!r} checkpoint (model_type in its config.json), neither a SupMAE nor a "
                "segmentation one. Convert Transformers ViTMAE checkpoints and the official SupMAE / MAE weights with "
                "`supmae-convert` first."
            )
        config = SupMAEConfig.from_pretrained(source, **hub_kwargs)
    elif config is None:
        raise ValueError("Give a checkpoint (--model_name_or_path) or an architecture (--config_name).")
    model = UperNetForSemanticSegmentation(
        upernet_config(
            backbone_config_from(config, crop_size, drop_path_rate), id2label, decode_channels, auxiliary_channels
        )  # fmt: skip
    )
    if source is None or random_init:
        what = f"the architecture of {source}" if source else "the given architecture"
        report = f"UperNetForSemanticSegmentation: {what} with random weights (training from scratch)."
        logger.warning(report)
        return model, report
    return model, load_encoder_weights(model.backbone, source, config, **hub_kwargs)


def segmentation_image_processor(crop_size: int, reduce_labels: bool = False) -> SegformerImageProcessor:
    """What a saved directory ships for `pipeline("image-segmentation")`: a resize to the crop size (no sliding
    window) and ImageNet normalization. `do_reduce_labels` records whether the annotations were reduced."""
    return SegformerImageProcessor(
        size={"height": crop_size, "width": crop_size},
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        do_reduce_labels=reduce_labels,
    )


def save_segmentation_model(model: UperNetForSemanticSegmentation, output_dir: str, image_processor=None) -> None:
    """`save_pretrained`, plus the model files and the `auto_map` that make the directory load with
    `trust_remote_code=True` where the supmae package is not installed."""
    os.makedirs(output_dir, exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    for name in ("configuration_supmae.py", "modeling_supmae.py"):
        shutil.copyfile(os.path.join(here, name), os.path.join(output_dir, name))
    model.config.auto_map = dict(SEGMENTATION_REMOTE_CODE_AUTO_MAP)
    model.save_pretrained(output_dir)
    if image_processor is not None:
        image_processor.save_pretrained(output_dir)


# ---------------------------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------------------------


def window_boxes(height: int, width: int, crop_size: tuple[int, int], stride: tuple[int, int]) -> list[tuple]:
    """mmsegmentation's sliding windows over an image at least `crop_size` large: (top, left, bottom, right) boxes of
    the crop size whose top-left corners step by `stride`, the last row and column moved back to end at the border."""
    (crop_h, crop_w), (stride_h, stride_w) = crop_size, stride
    rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    columns = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    boxes = []
    for row in range(rows):
        for column in range(columns):
            bottom, right = min(row * stride_h + crop_h, height), min(column * stride_w + crop_w, width)
            boxes.append((max(bottom - crop_h, 0), max(right - crop_w, 0), bottom, right))
    return boxes


@torch.no_grad()
def sliding_window_logits(model, pixel_values: torch.Tensor, crop_size, stride, num_labels: int,
                          windows_per_batch: int = 8) -> torch.Tensor:  # fmt: skip
    """
    mmsegmentation's slide inference: the model's logits for each `crop_size` window (see `window_boxes`), averaged
    where windows overlap. An image smaller than the crop is padded (bottom, right) with zeros, the normalized mean
    color that training pads with, and the padding is cut off again.

    Args:
        model: returns `.logits` `(n, K, crop_h, crop_w)` for `(n, 3, crop_h, crop_w)` inputs (UperNet does).
        pixel_values: `(B, 3, H, W)` normalized images.
        crop_size, stride: (height, width) pairs (or ints).
        windows_per_batch: windows run through the model at once, per image.

    Returns:
        `(B, K, H, W)` float32 logits.
    """
    crop_size, stride = _pair(crop_size), _pair(stride)
    if not all(0 < s <= c for s, c in zip(stride, crop_size, strict=True)) or windows_per_batch < 1:
        raise ValueError(f"Sliding windows need 0 < stride <= crop size and windows_per_batch >= 1 (stride {stride}, "
                         f"crop size {crop_size}, windows_per_batch {windows_per_batch}).")  # fmt: skip
    batch_size, _, height, width = pixel_values.shape
    pad_h, pad_w = max(crop_size[0] - height, 0), max(crop_size[1] - width, 0)
    padded = F.pad(pixel_values, (0, pad_w, 0, pad_h))
    logits = padded.new_zeros(batch_size, num_labels, *padded.shape[-2:], dtype=torch.float32)
    counts = padded.new_zeros(1, 1, *padded.shape[-2:], dtype=torch.float32)
    boxes = window_boxes(*padded.shape[-2:], crop_size, stride)
    for start in range(0, len(boxes), windows_per_batch):
        chunk = boxes[start : start + windows_per_batch]
        crops = torch.cat([padded[:, :, top:bottom, left:right] for top, left, bottom, right in chunk])
        outputs = model(pixel_values=crops).logits.float().unflatten(0, (len(chunk), batch_size))
        for (top, left, bottom, right), window in zip(chunk, outputs, strict=True):
            logits[:, :, top:bottom, left:right] += window
            counts[:, :, top:bottom, left:right] += 1
    return (logits / counts)[:, :, :height, :width]


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------


def pixel_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """mmsegmentation's decode loss: cross-entropy of `(B, K, h, w)` logits, bilinearly resized to the `(B, H, W)`
    labels, summed over labelled pixels and divided by ALL pixels (an all-ignored crop gives 0, not NaN)."""
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum") / labels.numel()


class SupMAESegmentationTrainer(SupMAEBaseTrainer):
    """
    `Trainer` for `UperNetForSemanticSegmentation` on a SupMAE backbone, with mmsegmentation's MAE recipe:
    - AdamW with MAE's layer-wise lr decay (embeddings layer 0, block i layer i + 1, neck and heads the top layer);
    - loss = decode cross-entropy + `auxiliary_loss_weight` x auxiliary cross-entropy (`pixel_cross_entropy`), both
      logged (`decode_loss`, `auxiliary_loss`) next to the total `loss` and the learning rate of the heads;
    - evaluation by sliding windows (`crop_size`, `stride`) on the rescaled images, the logits resized back to each
      original annotation, one confusion matrix over the whole set: `eval_mean_iou`, `eval_mean_accuracy`,
      `eval_overall_accuracy` (the returned metrics also hold the per-class lists).
    Evaluation sets are batched one image at a time (`segmentation_collator`), split across processes without
    padding, so every image counts once.
    """

    def __init__(self, *args, layer_decay: float = 0.65, crop_size=512, stride=341, windows_per_batch: int = 8, **kw):
        kw.setdefault("data_collator", segmentation_collator)
        super().__init__(*args, **kw)
        self.layer_decay, self.crop_size, self.stride = layer_decay, _pair(crop_size), _pair(stride)
        self.windows_per_batch = windows_per_batch
        self._auxiliary_logits, self._train_sums = None, None
        # UperNet's forward takes **kwargs, from which Trainer would infer that the loss is already divided for
        # gradient accumulation (and multiply it by the number of processes); compute_loss returns a plain mean.
        self.model_accepts_loss_kwargs = False
        if self.model.auxiliary_head is not None:  # UperNet computes these logits but returns only the summed loss
            self.model.auxiliary_head.register_forward_hook(self._keep_auxiliary_logits)

    def _keep_auxiliary_logits(self, module, inputs, output):
        self._auxiliary_logits = output

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = layer_decay_adamw(self.model, self.args, self.layer_decay)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        self._auxiliary_logits = None
        outputs = model(pixel_values=inputs["pixel_values"])
        decode_loss = pixel_cross_entropy(outputs.logits, labels)
        loss, sums = decode_loss, [decode_loss.detach(), torch.zeros_like(decode_loss), 1]
        if self._auxiliary_logits is not None:
            auxiliary_loss = pixel_cross_entropy(self._auxiliary_logits, labels)
            loss = loss + self.model.config.auxiliary_loss_weight * auxiliary_loss
            sums[1] = auxiliary_loss.detach()
        self._auxiliary_logits = None
        if model.training:
            sums = torch.stack([torch.as_tensor(s, dtype=torch.float64, device=loss.device) for s in sums])
            self._train_sums = sums if self._train_sums is None else self._train_sums + sums
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._train_sums is not None:  # a training log: the losses since the last one
            decode, auxiliary, count = self.accelerator.reduce(self._train_sums, reduction="sum").tolist()
            self._train_sums = None
            logs["decode_loss"], logs["auxiliary_loss"] = round(decode / count, 4), round(auxiliary / count, 4)
        super().log(logs, *args, **kwargs)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        self._memory_tracker.start()
        start = time.time()
        confusion = self.confusion_matrix(dataset)
        metrics = metrics_from_confusion_matrix(confusion)
        scalars = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items() if not isinstance(v, list)}
        scalars[f"{metric_key_prefix}_runtime"] = round(time.time() - start, 4)
        scalars[f"{metric_key_prefix}_samples_per_second"] = round(len(dataset) / (time.time() - start), 3)
        self.log(scalars)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, scalars)
        self._memory_tracker.stop_and_update_metrics(scalars)
        lists = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items() if isinstance(v, list)}
        return {**scalars, **lists}

    def confusion_matrix(self, dataset) -> torch.Tensor:
        """(K, K) pixel counts over the whole `dataset`, summed over processes (rows = reference class)."""
        model, args = self.model, self.args
        num_labels = model.config.num_labels
        shard = torch.utils.data.Subset(dataset, range(args.process_index, len(dataset), args.world_size))
        loader = torch.utils.data.DataLoader(
            shard, batch_size=1, collate_fn=segmentation_collator, num_workers=args.dataloader_num_workers
        )
        confusion = torch.zeros(num_labels, num_labels, dtype=torch.int64, device=args.device)
        was_training = model.training
        model.eval()
        try:
            for batch in loader:
                if batch is None:  # an unreadable image or annotation (skipped, listed in skipped_images.tsv)
                    continue
                pixel_values, labels = batch["pixel_values"].to(args.device), batch["labels"].to(args.device)
                with self.accelerator.autocast():
                    logits = sliding_window_logits(model, pixel_values, self.crop_size, self.stride, num_labels,
                                                   self.windows_per_batch)  # fmt: skip
                logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
                confusion += segmentation_confusion_matrix(logits.argmax(1), labels, num_labels, IGNORE_INDEX)
        finally:
            model.train(was_training)
        return self.accelerator.reduce(confusion, reduction="sum")


# ---------------------------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------------------------


def palette(num_labels: int) -> np.ndarray:
    """A fixed color per class `(K + 1, 3)` uint8, well apart for small K; the last row (ignored pixels) is black."""
    hues = (np.arange(num_labels) * 0.618033988749895) % 1.0  # the golden ratio spreads consecutive hues
    values = np.where(np.arange(num_labels) % 2, 0.75, 1.0)
    rgb = np.stack([_hsv_to_rgb(h, 0.85, v) for h, v in zip(hues, values, strict=True)] + [(0.0, 0.0, 0.0)])
    return (rgb * 255).round().astype(np.uint8)


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> tuple[float, float, float]:
    sector, fraction = divmod(hue * 6, 1)
    p, q, t = value * (1 - saturation), value * (1 - saturation * fraction), value * (1 - saturation * (1 - fraction))
    return [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)][int(sector) % 6]


def colorize(labels: np.ndarray, num_labels: int) -> PIL.Image.Image:
    """`(H, W)` class indices (255 = ignored, drawn black) as an RGB picture."""
    labels = np.asarray(labels).astype(np.int64)
    return PIL.Image.fromarray(palette(num_labels)[np.where(labels == IGNORE_INDEX, num_labels, labels)])


def segmentation_figure(images: list[PIL.Image.Image], references: list, predictions: list, num_labels: int,
                        scale: int = 1, gap: int = 4) -> PIL.Image.Image:  # fmt: skip
    """One row per image: the image | its annotation | the prediction, each enlarged `scale` times (nearest)."""
    tiles = [[image.convert("RGB"), colorize(r, num_labels), colorize(p, num_labels)]
             for image, r, p in zip(images, references, predictions, strict=True)]  # fmt: skip
    width = max(tile.width for row in tiles for tile in row) * scale
    height = max(tile.height for row in tiles for tile in row) * scale
    figure = PIL.Image.new("RGB", (3 * width + 4 * gap, len(tiles) * (height + gap) + gap), "white")
    for row, row_tiles in enumerate(tiles):
        for column, tile in enumerate(row_tiles):
            tile = tile.resize((tile.width * scale, tile.height * scale), PIL.Image.NEAREST)
            figure.paste(tile, (gap + column * (width + gap), gap + row * (height + gap)))
    return figure


def predict_segmentation(model, pixel_values: torch.Tensor, output_size, crop_size, stride) -> np.ndarray:
    """The `(H, W)` class map of one image `(1, 3, h, w)`: sliding windows, logits resized to `output_size`."""
    logits = sliding_window_logits(model, pixel_values, crop_size, stride, model.config.num_labels)
    logits = F.interpolate(logits, size=tuple(output_size), mode="bilinear", align_corners=False)
    return logits.argmax(1)[0].cpu().numpy()


def prediction_figure(model, dataset, crop_size, stride, device, count: int = 6) -> PIL.Image.Image:
    """`segmentation_figure` of the first `count` readable items of a `SegmentationDataset` (evaluation transform):
    each image, its annotation and `model`'s sliding-window prediction, enlarged 4 times."""
    images, references, predictions = [], [], []
    model.eval()
    for index in range(len(dataset)):
        pair, item = dataset.read(index), dataset[index]
        if pair is None or item is None:
            continue
        predictions.append(predict_segmentation(model, item["pixel_values"][None].to(device), item["labels"].shape,
                                                crop_size, stride))  # fmt: skip
        images.append(pair[0])
        references.append(item["labels"].numpy())
        if len(images) == count:
            break
    return segmentation_figure(images, references, predictions, model.config.num_labels, scale=4)
