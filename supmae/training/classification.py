# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""The classification trainer (fine-tuning, linear probing, evaluation) and linear probing on cached features."""

import torch
from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput

from ..metrics import UNLABELED, classification_metrics, topk_and_loss_preprocessor
from .optim import lars_parameter_groups, layer_decay_adamw
from .trainer import SupMAEBaseTrainer


class SupMAEClassificationTrainer(SupMAEBaseTrainer):
    """
    `Trainer` for `SupMAEForImageClassification` (fine-tuning, linear probing) and for `FeatureProbe` (linear probing
    on cached features):
    - MAE's optimizers: AdamW with layer-wise lr decay (`optimizer_name="adamw"`), or LARS (`"lars"`, timm's, with
      layer adaptation for matrices only); for linear probes at small batches, momentum SGD (`"sgd"`);
    - MAE's losses: soft-target cross-entropy for mixed (mixup / cutmix) targets, label-smoothed cross-entropy for
      hard ones in training, plain cross-entropy in evaluation;
    - top-1 / top-5 accuracy in evaluation, computed offline, optionally restricted to a class subset; accuracy,
      loss and `num_samples` count the scored images only (an unreadable image's row has label -100).
    """

    def __init__(self, *args, optimizer_name="adamw", layer_decay=1.0, label_smoothing=0.0, class_subset=None, **kw):
        kw.setdefault("compute_metrics", classification_metrics)
        kw.setdefault("preprocess_logits_for_metrics", topk_and_loss_preprocessor(5, class_subset))
        super().__init__(*args, **kw)
        self.optimizer_name, self.layer_decay, self.label_smoothing = optimizer_name, layer_decay, label_smoothing

    def set_class_subset(self, class_subset) -> None:
        """Restrict the evaluation's predictions to these model classes (None: all classes)."""
        self.preprocess_logits_for_metrics = topk_and_loss_preprocessor(5, class_subset)

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        model = self.model if model is None else model
        learning_rate = self.args.learning_rate
        if self.optimizer_name == "lars":
            from timm.optim import Lars

            self.optimizer = Lars(
                lars_parameter_groups(model), lr=learning_rate, momentum=0.9, weight_decay=self.args.weight_decay
            )
        elif self.optimizer_name == "sgd":
            trainable = [p for p in model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.SGD(
                trainable, lr=learning_rate, momentum=0.9, weight_decay=self.args.weight_decay
            )
        else:
            classifier = getattr(model, "classifier_model", model)  # FeatureProbe wraps the classifier
            self.optimizer = layer_decay_adamw(classifier, self.args, self.layer_decay)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.logits.float()
        if labels.ndim == 2:  # mixed targets
            loss = torch.sum(-labels * nn.functional.log_softmax(logits, dim=-1), dim=-1).mean()
        else:
            smoothing = self.label_smoothing if model.training else 0.0
            loss = nn.functional.cross_entropy(logits, labels, label_smoothing=smoothing)
        return (loss, outputs) if return_outputs else loss


class FeatureProbe(nn.Module):
    """Linear probing on cached features: `features (B, D)` -> the classifier's `classify` (BatchNorm + Linear). The
    head's parameters are the classifier's own, so training this trains `classifier_model`."""

    def __init__(self, classifier_model: nn.Module):
        super().__init__()
        self.classifier_model = classifier_model

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> ImageClassifierOutput:
        return ImageClassifierOutput(logits=self.classifier_model.classify(features))


class _PooledFeatures(nn.Module):
    # The frozen encoder and pooling of a classifier, returning features as "logits" for `Trainer.predict`.
    def __init__(self, classifier_model: nn.Module):
        super().__init__()
        self.classifier_model = classifier_model

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> ImageClassifierOutput:
        hidden_states = self.classifier_model.supmae(pixel_values).last_hidden_state
        features = self.classifier_model.pool(hidden_states)
        return ImageClassifierOutput(loss=features.new_zeros(()), logits=features)  # a loss keeps the labels


def extract_features(classifier_model: nn.Module, dataset, args, data_collator) -> dict[str, torch.Tensor]:
    """Pooled features `(N, D)` and labels `(N,)` (or multi-hot `(N, C)`) of a dataset, in order, through the (frozen)
    encoder: one forward pass, split across processes by the Trainer's prediction loop. The rows of unreadable images
    are there, labelled -100: `scored_features` leaves them out."""
    extractor = SupMAEBaseTrainer(
        model=_PooledFeatures(classifier_model),
        args=args,
        data_collator=data_collator,
        compute_metrics=None,
    )
    prediction = extractor.predict(dataset)
    return {"features": torch.from_numpy(prediction.predictions), "labels": torch.from_numpy(prediction.label_ids)}


def scored_rows(labels) -> torch.Tensor:
    """`(N,)` bool: the rows whose label (`(N,)`, or multi-hot `(N, C)`) is not -100, i.e. not an unreadable image's."""
    labels = torch.as_tensor(labels)
    return labels != UNLABELED if labels.ndim == 1 else (labels != UNLABELED).all(dim=-1)


def scored_features(cache: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`extract_features`' cache without the rows of unreadable images."""
    keep = scored_rows(cache["labels"])
    return {key: value[keep] for key, value in cache.items()}
