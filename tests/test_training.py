"""supmae.training: weight-decay groups, lr scaling, the metrics, and the checks around resuming."""

import os
import threading

import numpy as np
import pytest
import torch
from helpers import gray_levels, tiny_config, write_image_folder
from safetensors.torch import save_file
from transformers import EvalPrediction, TrainingArguments

from supmae import SupMAEForPreTraining
from supmae.data.collators import ImageCollator
from supmae.data.datasets import TransformedImageDataset
from supmae.data.gpu_decode import BatchDecoder, DeviceDecodeTransform, EncodedImageCollator
from supmae.data.sources import load_image_datasets
from supmae.data.transforms import PretrainingTransform
from supmae.metrics import pretraining_metrics
from supmae.training.arguments import SupMAETrainingArguments
from supmae.training.checkpoints import verify_loaded_checkpoint
from supmae.training.optim import decay_parameter_names, scaled_learning_rate
from supmae.training.pretraining import DeviceDecodingTrainer, SupMAETrainer


class RandomImages(torch.utils.data.Dataset):
    def __init__(self, n=16, labels=True):
        generator = torch.Generator().manual_seed(0)
        self.pixels = torch.randn(n, 3, 32, 32, generator=generator)
        self.labels = torch.randint(0, 5, (n,), generator=generator).tolist() if labels else None

    def __len__(self):
        return len(self.pixels)

    def __getitem__(self, i):
        item = {"pixel_values": self.pixels[i]}
        if self.labels is not None:
            item["labels"] = self.labels[i]
        return item


def make_trainer(tmp_path, labels=True, **overrides):
    arguments = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        max_steps=4,
        learning_rate=1e-3,
        weight_decay=0.05,
        report_to="none",
        logging_steps=2,
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    arguments.update(overrides)
    return SupMAETrainer(
        model=SupMAEForPreTraining(tiny_config()),
        args=TrainingArguments(**arguments),
        train_dataset=RandomImages(labels=labels),
        eval_dataset=RandomImages(n=8, labels=labels),
        data_collator=ImageCollator(5),
    )


def test_weight_decay_follows_mae():
    """No decay on biases and 1-D parameters (norms); decay on matrices and the 3-D cls / mask tokens; the frozen
    sin-cos tables are not trained at all."""
    model = SupMAEForPreTraining(tiny_config())
    decayed = set(decay_parameter_names(model))
    assert {
        "supmae.embeddings.cls_token",
        "decoder.mask_token",
        "supmae.layers.0.attention.qkv_proj.weight",
        "supmae.embeddings.patch_embeddings.projection.weight",
        "supervised_head.dense.weight",
    } <= decayed
    for name, parameter in model.named_parameters():
        if name.endswith(".bias") or parameter.ndim == 1 or not parameter.requires_grad:
            assert name not in decayed, name
    assert "supmae.layers.0.layernorm_before.weight" not in decayed
    assert "supervised_head.batch_norm.weight" not in decayed
    assert "supmae.embeddings.position_embeddings" not in decayed


def test_trainer_optimizer_uses_the_groups(tmp_path):
    trainer = make_trainer(tmp_path)
    optimizer = trainer.create_optimizer()
    decay_of = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    model = trainer.model
    assert decay_of[id(model.supmae.embeddings.cls_token)] == 0.05
    assert decay_of[id(model.supmae.layers[0].attention.qkv_proj.bias)] == 0.0
    assert id(model.supmae.embeddings.position_embeddings) not in decay_of
    assert len(decay_of) == sum(p.requires_grad for p in model.parameters())


def test_learning_rate_scaling_rule():
    # The released run: effective batch 4096, base 1.5e-4 -> peak 2.4e-3.
    assert scaled_learning_rate(1.5e-4, 4096) == pytest.approx(2.4e-3)
    assert scaled_learning_rate(1e-3, 256) == pytest.approx(1e-3)


def test_pretraining_metrics_by_hand():
    stats = np.array([[0.5, 2.0, 1.0], [0.5, 0.0, 0.0], [0.7, 1.0, 0.0], [0.7, 3.0, 1.0]])
    labels = np.array([3, -100, 1, 2])
    metrics = pretraining_metrics(EvalPrediction(predictions=stats, label_ids=labels))
    assert metrics == pytest.approx(
        {"reconstruction_loss": 0.6, "classification_loss": 2.0, "classification_accuracy": 2 / 3}
    )
    unlabeled = pretraining_metrics(EvalPrediction(predictions=stats, label_ids=np.full(4, -100)))
    assert unlabeled == pytest.approx({"reconstruction_loss": 0.6})


def test_training_logs_both_losses_and_accuracy(tmp_path):
    trainer = make_trainer(tmp_path)
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
    trainer = make_trainer(tmp_path)
    torch.manual_seed(123)
    first = trainer.evaluate()
    after_first = torch.rand(1)
    torch.manual_seed(123)
    second = trainer.evaluate()
    assert torch.equal(torch.rand(1), after_first)  # evaluation drew nothing from the global RNG
    for key in ("eval_loss", "eval_reconstruction_loss", "eval_classification_loss", "eval_classification_accuracy"):
        assert first[key] == second[key], key


def test_evaluation_without_labels_is_mae(tmp_path):
    metrics = make_trainer(tmp_path, labels=False).evaluate()
    assert "eval_reconstruction_loss" in metrics and "eval_classification_loss" not in metrics
    assert metrics["eval_loss"] == pytest.approx(metrics["eval_reconstruction_loss"], rel=1e-5)


def test_resume_restores_every_tensor(tmp_path):
    """Trainer resumes with strict=False; SupMAETrainer checks that all tensors, BatchNorm statistics included, are
    back."""
    trainer = make_trainer(tmp_path, save_strategy="steps", save_steps=4)
    trainer.train()
    checkpoint = os.path.join(trainer.args.output_dir, "checkpoint-4")
    saved = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert saved["supervised_head.batch_norm.num_batches_tracked"] == 4

    fresh = make_trainer(tmp_path / "fresh")
    fresh._load_from_checkpoint(checkpoint)
    restored = fresh.model.state_dict()
    assert restored.keys() == saved.keys()
    assert all(torch.equal(restored[k], saved[k]) for k in saved)


def test_a_checkpoint_missing_tensors_is_refused(tmp_path):
    model = SupMAEForPreTraining(tiny_config())
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    renamed = {k.replace("supervised_head.", "cls_head."): v for k, v in state.items()}
    save_file(renamed, tmp_path / "renamed.safetensors")
    with pytest.raises(RuntimeError, match=r"Not in the checkpoint: \['supervised_head\.batch_norm\.bias'"):
        verify_loaded_checkpoint(model, str(tmp_path / "renamed.safetensors"))
    changed = dict(state, **{"decoder.decoder_pred.bias": state["decoder.decoder_pred.bias"] + 1})
    save_file(changed, tmp_path / "changed.safetensors")
    with pytest.raises(RuntimeError, match=r"were not loaded: \['decoder\.decoder_pred\.bias'\]"):
        verify_loaded_checkpoint(model, str(tmp_path / "changed.safetensors"))


def test_sync_batch_norm_keeps_the_checkpoint_layout():
    model = SupMAEForPreTraining(tiny_config())
    keys = list(model.state_dict())
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # what sync_batch_norm_if_requested does on GPUs
    assert isinstance(converted.supervised_head.batch_norm, torch.nn.SyncBatchNorm)
    assert list(converted.state_dict()) == keys  # saved and resumed like the BatchNorm1d it replaces


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
