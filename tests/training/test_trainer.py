"""SupMAEBaseTrainer (supmae.training.trainer) and a non-finite loss: it stops before the update and names the step, or
skips the whole optimizer step, and every process stops together."""

import os
import subprocess
import sys

import pytest
import torch
from helpers import ROOT, PoisonedEpochs, nonfinite_loss_trainer, script_env

from supmae.training.checkpoints import checkpoint_problem
from supmae.training.trainer import NonFiniteLossError


def weights(directory):
    from safetensors.torch import load_file

    return load_file(os.path.join(directory, "model.safetensors"))


def test_a_nonfinite_loss_stops_before_the_update_and_names_the_step(tmp_path):
    trainer = nonfinite_loss_trainer(tmp_path, PoisonedEpochs({1}), "stop")
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 5 \(epoch 1.00\).*checkpoint-4, is intact"):
        trainer.train()
    assert checkpoint_problem(tmp_path / "checkpoint-4") is None and not (tmp_path / "checkpoint-5").exists()
    saved = weights(tmp_path / "checkpoint-4")
    for name, parameter in trainer.model.named_parameters():  # no update after the step-4 checkpoint
        assert torch.equal(parameter.detach(), saved[name]), name


def test_skipping_nonfinite_steps_leaves_weights_and_statistics_untouched(tmp_path):
    """Epoch 1 is all NaN: its four steps are skipped, so the weights and the BatchNorm statistics saved after epoch 1
    equal those after epoch 0, and epoch 2 trains on."""
    trainer = nonfinite_loss_trainer(tmp_path, PoisonedEpochs({1}), "skip")
    trainer.train()
    assert trainer.nonfinite_steps_skipped == 4
    assert any(log.get("nonfinite_steps_skipped") == 4 for log in trainer.state.log_history)
    first, second, third = (weights(tmp_path / f"checkpoint-{step}") for step in (4, 8, 12))
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert any(not torch.equal(second[name], third[name]) for name in first)
    assert all(torch.isfinite(tensor).all() for tensor in third.values())


TWO_RANKS = """
import os, sys
sys.path.insert(0, {tests!r})
from helpers import PoisonedEpochs, nonfinite_loss_trainer
from supmae.training.trainer import NonFiniteLossError
rank = int(os.environ["RANK"])
trainer = nonfinite_loss_trainer({output!r}, PoisonedEpochs({{1}} if rank == 1 else set()), "stop")
try:
    trainer.train()
    print(f"rank {{rank}} finished", flush=True)
except NonFiniteLossError as error:
    print(f"rank {{rank}} stopped: {{error}}", flush=True)
del trainer
import gc, torch
gc.collect()
torch.distributed.destroy_process_group()  # as supmae.cli.run_script does: no abort at exit
"""


@pytest.mark.slow
def test_every_process_stops_together_when_one_sees_a_nonfinite_loss(tmp_path):
    """Two processes under torchrun, only rank 1's data poisoned (from epoch 1 = step 3): both stop at step 3,
    instead of rank 0 stepping on and waiting for its peer."""
    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS.format(tests=os.path.join(ROOT, "tests"), output=str(tmp_path / "out")))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = subprocess.run([*launcher, str(script)], env=script_env(), capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert "rank 1 stopped: The training loss is nan at step 3 (epoch 1.00)" in log, log[-3000:]
    assert "rank 0 stopped: The training loss is non-finite in another process at step 3 (epoch 1.00)" in log
    assert result.returncode == 0 and "terminate called" not in log, log[-3000:]
    assert checkpoint_problem(tmp_path / "out" / "checkpoint-2") is None


class PoisonedBatch(PoisonedEpochs):
    """16 random images; the fifth batch of 4 drawn (the first micro-batch of epoch 1) is NaN."""

    def __init__(self):
        super().__init__(set())
        self.calls = 0

    def __getitem__(self, index):
        self.calls += 1
        item = super().__getitem__(index)
        if 16 < self.calls <= 20:
            item["pixel_values"] = item["pixel_values"] * float("nan")
        return item


def test_a_skipped_step_drops_every_micro_batch_of_its_window(tmp_path):
    """Gradient accumulation over 2 micro-batches, a checkpoint every step: the NaN micro-batch opens step 3's window,
    so step 3 makes no update at all (the window's finite second micro-batch is dropped too), and step 4 trains."""
    trainer = nonfinite_loss_trainer(tmp_path, PoisonedBatch(), "skip")
    trainer.args.gradient_accumulation_steps, trainer.args.save_strategy, trainer.args.save_steps = 2, "steps", 1
    trainer.args.num_train_epochs = 2
    trainer.train()
    assert trainer.nonfinite_steps_skipped == 1
    second, third, fourth = (weights(tmp_path / f"checkpoint-{step}") for step in (2, 3, 4))
    parameters = [name for name, _ in trainer.model.named_parameters()]  # the finite micro-batch moved BatchNorm
    assert all(torch.equal(second[name], third[name]) for name in parameters)
    assert any(not torch.equal(third[name], fourth[name]) for name in parameters)


def test_a_skipped_step_under_fp16_leaves_the_weights_and_lowers_the_scale():
    """fp16's GradScaler needs gradients to inspect: they are made NaN, so it skips the step itself."""
    from supmae.training.trainer import drop_gradients

    layer = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    before = [p.detach().clone() for p in layer.parameters()]
    scaler.scale(layer(torch.randn(3, 4)).sum()).backward()
    drop_gradients(layer, keep_for_scaler=True)
    scaler.step(optimizer)
    scaler.update()
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters(), strict=True))
    assert scaler.get_scale() < 1024.0


class _FakeFSDPPlugin:
    """What `Trainer.save_model` reads of accelerate's FSDP plugin: the state-dict type of examples/fsdp_config.json."""

    state_dict_type = "StateDictType.SHARDED_STATE_DICT"


@pytest.mark.parametrize("sharded", [True, False], ids=["sharded", "full"])
def test_the_saved_model_is_whole_under_fsdp_with_sharded_checkpoints(tmp_path, monkeypatch, sharded):
    """FSDP itself needs GPUs (benchmarks/fsdp_check.py runs it there); this checks the wiring on the CPU. With
    SHARDED_STATE_DICT, Trainer's `save_model` writes no weights (it saves only FULL_STATE_DICT models), so the final
    model must still reach model.safetensors whole; checkpoint saves (`_internal_call`) are left to Trainer."""
    trainer = nonfinite_loss_trainer(tmp_path / "run", PoisonedEpochs(set()), "stop")
    plugin = _FakeFSDPPlugin()
    if not sharded:
        plugin.state_dict_type = "StateDictType.FULL_STATE_DICT"
    monkeypatch.setattr(trainer.accelerator.state, "fsdp_plugin", plugin, raising=False)
    monkeypatch.setattr(trainer, "is_fsdp_enabled", True)
    trainer.save_model(str(tmp_path / "checkpoint"), _internal_call=True)
    # Checkpoints: Trainer's own path (sharded: no model.safetensors; the shards come with the optimizer's state).
    assert (tmp_path / "checkpoint" / "model.safetensors").exists() is not sharded
    trainer.save_model(str(tmp_path / "final"))
    saved = weights(tmp_path / "final")
    expected = trainer.model.state_dict()
    assert saved.keys() == expected.keys()
    assert all(torch.equal(saved[name], expected[name]) for name in saved)
