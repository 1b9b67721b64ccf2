"""The transfer suite's trainer and collator (supmae.training.transfer): multi-hot targets and the multi-label loss."""

import torch

from supmae.data.collators import TransferCollator
from supmae.training.transfer import TransferTrainer


def test_multilabel_targets_and_loss():
    items = [
        {"pixel_values": torch.zeros(3, 4, 4), "labels": [0, 2]},
        {"pixel_values": torch.zeros(3, 4, 4), "labels": 1},
    ]
    batch = TransferCollator(3, multi_label=True)(items)
    assert batch["labels"].tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    assert TransferCollator(3)([{**items[1]}])["labels"].tolist() == [1]  # single-label: class indices

    class Linear(torch.nn.Module):
        def forward(self, pixel_values):
            return type("Output", (), {"logits": pixel_values.flatten(1)[:, :3] + torch.tensor([2.0, -1.0, 0.5])})()

    from transformers import TrainingArguments

    trainer = TransferTrainer(
        model=torch.nn.Linear(1, 1),
        multi_label=True,
        args=TrainingArguments(output_dir="unused", report_to="none", use_cpu=True),
    )
    loss = trainer.compute_loss(Linear(), batch)
    logits = torch.tensor([[2.0, -1.0, 0.5]] * 2)
    target = batch["labels"]
    by_hand = -(target * torch.log(torch.sigmoid(logits)) + (1 - target) * torch.log(1 - torch.sigmoid(logits)))
    torch.testing.assert_close(loss, by_hand.mean())
