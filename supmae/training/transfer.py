# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""The trainer of the few-shot transfer suite (multi-label targets)."""

from torch import nn

from .classification import SupMAEClassificationTrainer


class TransferTrainer(SupMAEClassificationTrainer):
    """`SupMAEClassificationTrainer` with a multi-label option: binary cross-entropy on multi-hot targets (sigmoid
    scores), as VOC 2007 is trained and scored."""

    def __init__(self, *args, multi_label: bool = False, **kwargs):
        kwargs.setdefault("compute_metrics", None)
        kwargs.setdefault("preprocess_logits_for_metrics", None)  # predictions are the logits, for any metric
        super().__init__(*args, **kwargs)
        self.multi_label = multi_label

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.multi_label:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = nn.functional.binary_cross_entropy_with_logits(outputs.logits.float(), labels.float())
        return (loss, outputs) if return_outputs else loss
