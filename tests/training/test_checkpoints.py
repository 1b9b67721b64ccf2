"""The checkpoint protocol (supmae.training.checkpoints): a resumed model gets every tensor back, a checkpoint is
trusted only once marked complete and unchanged since, and a run killed during its final save resumes."""

import json
import os

import pytest
import torch
from helpers import random_images_trainer, tiny_config
from safetensors.torch import save_file

from supmae import SupMAEForPreTraining
from supmae.training.checkpoints import (
    CHECKPOINT_COMPLETE,
    checkpoint_problem,
    last_complete_checkpoint,
    mark_checkpoint_complete,
    verify_loaded_checkpoint,
)


def test_resume_restores_every_tensor(tmp_path):
    """Trainer resumes with strict=False; SupMAETrainer checks that all tensors, BatchNorm statistics included, are
    back."""
    trainer = random_images_trainer(tmp_path, save_strategy="steps", save_steps=4)
    trainer.train()
    checkpoint = os.path.join(trainer.args.output_dir, "checkpoint-4")
    saved = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert saved["supervised_head.batch_norm.num_batches_tracked"] == 4

    fresh = random_images_trainer(tmp_path / "fresh")
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


def test_a_checkpoint_damaged_after_saving_is_not_resumed_from(tmp_path):
    for step in (3, 6):
        checkpoint = tmp_path / f"checkpoint-{step}"
        checkpoint.mkdir()
        (checkpoint / "model.safetensors").write_bytes(b"x" * 100)
        (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        mark_checkpoint_complete(str(checkpoint), step)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-6")
    (tmp_path / "checkpoint-6" / "model.safetensors").write_bytes(b"x" * 40)  # truncated by a bad copy, say
    assert checkpoint_problem(tmp_path / "checkpoint-6") == "model.safetensors has 40 bytes, 100 when it was saved"
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-3")
    (tmp_path / "checkpoint-3" / "trainer_state.json").write_text('{"global_st')  # killed while writing it
    assert checkpoint_problem(tmp_path / "checkpoint-3").startswith("its trainer_state.json is unreadable")
    assert last_complete_checkpoint(tmp_path) is None


def test_a_run_killed_during_its_final_save_resumes_instead_of_counting_as_finished(tmp_path):
    from types import SimpleNamespace

    from supmae.training.checkpoints import resume_checkpoint
    from supmae.training.runs import finished_run

    (tmp_path / "checkpoint-3").mkdir()
    (tmp_path / "checkpoint-3" / "trainer_state.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"half of the final weights")  # no trainer_state.json after it
    args = SimpleNamespace(output_dir=str(tmp_path), resume_from_checkpoint=None, process_index=0)
    assert finished_run(str(tmp_path), ["--the", "command"]) is None
    assert resume_checkpoint(args) == str(tmp_path / "checkpoint-3")
    # Killed after the final model and state but before its record (run_complete.json): still resumed.
    (tmp_path / "trainer_state.json").write_text("{}")
    assert finished_run(str(tmp_path), ["--the", "command"]) is None
    # A model and its state with neither a record nor a checkpoint to resume from: kept, not overwritten.
    (tmp_path / "checkpoint-3" / "trainer_state.json").unlink()
    with pytest.raises(FileExistsError, match="already holds a finished run"):
        finished_run(str(tmp_path), ["--the", "command"])


def test_resume_edge_cases(tmp_path):
    """A checkpoint folder with another name, a second crash at the same step, and a damaged mark."""
    from types import SimpleNamespace

    from supmae.training.checkpoints import resume_checkpoint

    def checkpoint(path, step, mark=True):
        path.mkdir()
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        if mark:
            mark_checkpoint_complete(str(path), step)

    checkpoint(tmp_path / "best_model", 6)
    checkpoint(tmp_path / "checkpoint-3", 3)
    checkpoint(tmp_path / "checkpoint-9", 9, mark=False)  # cut short
    (tmp_path / "incomplete-checkpoint-9").mkdir()  # from an earlier crash at the same step
    args = SimpleNamespace(
        output_dir=str(tmp_path), resume_from_checkpoint=str(tmp_path / "best_model"), process_index=0
    )
    assert resume_checkpoint(args) == str(tmp_path / "best_model")  # its step, 6, read from trainer_state.json
    assert (tmp_path / "incomplete-checkpoint-9.2").is_dir() and not (tmp_path / "checkpoint-9").exists()
    (tmp_path / "checkpoint-3" / CHECKPOINT_COMPLETE).write_text("{")
    assert checkpoint_problem(tmp_path / "checkpoint-3").startswith(f"its {CHECKPOINT_COMPLETE} is unreadable")
    assert last_complete_checkpoint(tmp_path) is None
