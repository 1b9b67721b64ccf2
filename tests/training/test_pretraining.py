"""The pretraining trainers (supmae.training.pretraining): SupMAETrainer's optimizer groups, both losses and the
accuracy logged, evaluation repeatable and MAE's without labels; DeviceDecodingTrainer trains on the CPU path's
crops."""

import threading

import pytest
import torch
from helpers import gray_levels, random_images_trainer, tiny_config, write_image_folder

from supmae import SupMAEForPreTraining
from supmae.data.collators import ImageCollator
from supmae.data.datasets import TransformedImageDataset
from supmae.data.gpu_decode import BatchDecoder, DeviceDecodeTransform, EncodedImageCollator
from supmae.data.sources import load_image_datasets
from supmae.data.transforms import PretrainingTransform
from supmae.training.arguments import SupMAETrainingArguments
from supmae.training.pretraining import DeviceDecodingTrainer, SupMAETrainer


def test_trainer_optimizer_uses_the_groups(tmp_path):
    trainer = random_images_trainer(tmp_path)
    optimizer = trainer.create_optimizer()
    decay_of = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    model = trainer.model
    assert decay_of[id(model.supmae.embeddings.cls_token)] == 0.05
    assert decay_of[id(model.supmae.layers[0].attention.qkv_proj.bias)] == 0.0
    assert id(model.supmae.embeddings.position_embeddings) not in decay_of
    assert len(decay_of) == sum(p.requires_grad for p in model.parameters())


def test_training_logs_both_losses_and_accuracy(tmp_path):
    trainer = random_images_trainer(tmp_path)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2
    for entry in logs:
        assert {"reconstruction_loss", "classification_loss", "classification_accuracy"} <= set(entry)
        # loss = reconstruction + 0.01 * classification, each averaged over the same micro-batches (every image is
        # labeled and every batch holds 4, so the per-batch and per-image means agree). What separates the two sides:
        # the two parts are logged rounded to 4 decimals (up to 5e-5, and 0.01 x 5e-5), the loss is not; Trainer sums
        # the float32 loss (~1.2, ulp 1.2e-7) over the 2 steps. So 5e-5 + 5e-7 + a few float32 ulps < 5.1e-5; a weight
        # of 0.0105 instead of 0.01 (8e-4 off here) passed the former 2e-3.
        expected = entry["reconstruction_loss"] + 0.01 * entry["classification_loss"]
        assert entry["loss"] == pytest.approx(expected, abs=5.1e-5)


def test_evaluation_is_repeatable_and_leaves_the_training_rng_alone(tmp_path):
    trainer = random_images_trainer(tmp_path)
    torch.manual_seed(123)
    first = trainer.evaluate()
    after_first = torch.rand(1)
    torch.manual_seed(123)
    second = trainer.evaluate()
    assert torch.equal(torch.rand(1), after_first)  # evaluation drew nothing from the global RNG
    for key in ("eval_loss", "eval_reconstruction_loss", "eval_classification_loss", "eval_classification_accuracy"):
        assert first[key] == second[key], key


def test_evaluation_without_labels_is_mae(tmp_path):
    metrics = random_images_trainer(tmp_path, labels=False).evaluate()
    assert "eval_reconstruction_loss" in metrics and "eval_classification_loss" not in metrics
    assert metrics["eval_loss"] == pytest.approx(metrics["eval_reconstruction_loss"], rel=1e-5)


def record_batches(trainer_class, dataset, collator, tmp_path, **kwargs):
    seen = []

    class Recording(trainer_class):
        def compute_loss(self, model, inputs, *args, **kw):
            seen.append(inputs["pixel_values"].detach().clone())
            return super().compute_loss(model, inputs, *args, **kw)

    torch.manual_seed(0)
    model = SupMAEForPreTraining(tiny_config(num_labels=2))
    arguments = SupMAETrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=2,
        use_cpu=True,
        report_to="none",
        dataloader_num_workers=2,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    trainer = Recording(model=model, args=arguments, train_dataset=dataset, data_collator=collator, **kwargs)
    trainer.train()
    return seen, trainer


def test_the_trainer_decodes_ahead_and_trains_on_the_cpu_paths_crops(tmp_path):
    write_image_folder(tmp_path / "images", per_class=12, size=(48, 40))  # 6 batches: training stops mid-epoch
    split = load_image_datasets(train_dir=str(tmp_path / "images"))["train"]
    transform = PretrainingTransform(32)
    cpu_seen, _ = record_batches(
        SupMAETrainer, TransformedImageDataset(split, "image", "label", transform), ImageCollator(2), tmp_path / "a"
    )
    device_seen, trainer = record_batches(
        DeviceDecodingTrainer,
        TransformedImageDataset(split, "image", "label", DeviceDecodeTransform(transform)),
        EncodedImageCollator(32, 2),
        tmp_path / "b",
        batch_decoder=BatchDecoder.for_transform(transform, "cpu"),
    )
    assert len(device_seen) == len(cpu_seen) == 2
    for cpu, device in zip(cpu_seen, device_seen, strict=True):
        assert gray_levels(cpu, device).max() <= 2.01  # the same images, crops and flips, in the same order
    assert isinstance(trainer.eval_data_collator, ImageCollator)
    assert not any(t.name == "supmae-decode-ahead" and t.is_alive() for t in threading.enumerate())  # closed
