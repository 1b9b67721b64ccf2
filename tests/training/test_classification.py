"""The classification trainer (supmae.training.classification): AdamW with layer-wise scaled learning rates, and MAE's
losses (soft targets, label smoothing in training, plain cross-entropy in evaluation)."""

import pytest
import torch
from helpers import tiny_config
from transformers import TrainingArguments

from supmae import SupMAEForImageClassification
from supmae.training.classification import SupMAEClassificationTrainer


def test_trainer_builds_adamw_with_scaled_learning_rates(tmp_path):
    model = SupMAEForImageClassification(tiny_config())
    args = TrainingArguments(
        output_dir=str(tmp_path),
        learning_rate=4e-3,
        weight_decay=0.05,
        adam_beta2=0.999,
        report_to="none",
        use_cpu=True,
    )
    optimizer = SupMAEClassificationTrainer(model=model, args=args, layer_decay=0.65).create_optimizer()
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["betas"] == (0.9, 0.999)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert lr_of[id(model.classifier.weight)] == pytest.approx(4e-3)
    assert lr_of[id(model.supmae.layers[1].mlp.fc1.weight)] == pytest.approx(4e-3 * 0.65)
    assert lr_of[id(model.supmae.embeddings.cls_token)] == pytest.approx(4e-3 * 0.65**3)


def test_losses_follow_mae(tmp_path):
    from timm.loss import SoftTargetCrossEntropy

    model = SupMAEForImageClassification(tiny_config()).eval()
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = SupMAEClassificationTrainer(model=model, args=args, label_smoothing=0.1)
    pixel_values = torch.randn(4, 3, 32, 32)
    logits = model(pixel_values).logits
    soft = torch.softmax(torch.randn(4, 5), dim=-1)
    torch.testing.assert_close(
        trainer.compute_loss(model, {"pixel_values": pixel_values, "labels": soft}),
        SoftTargetCrossEntropy()(logits, soft),
    )
    hard = torch.tensor([0, 1, 2, 3])
    model.train()
    smoothed = trainer.compute_loss(model, {"pixel_values": pixel_values, "labels": hard})
    log_probs = torch.log_softmax(model(pixel_values).logits, dim=-1)
    expected = (0.9 * -log_probs[torch.arange(4), hard] + 0.1 * -log_probs.mean(-1)).mean()  # timm's definition
    torch.testing.assert_close(smoothed, expected)
    model.eval()  # evaluation: plain cross-entropy
    torch.testing.assert_close(
        trainer.compute_loss(model, {"pixel_values": pixel_values, "labels": hard}),
        torch.nn.functional.cross_entropy(logits, hard),
    )
