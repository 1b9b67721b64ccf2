"""run_pretraining.main, instrumented for tests/training/test_multiprocess.py: it records what each process trained on
and what it ended with. It runs as run_pretraining.py does, with a record directory as its first argument:

    torchrun --standalone --nproc_per_node 2 tests/training/torchrun_harness.py RECORD_DIR [run_pretraining.py args]
    python tests/training/torchrun_harness.py RECORD_DIR [run_pretraining.py arguments]       # one process
    torchrun --nnodes 2 --nproc_per_node 1 --rdzv_backend c10d --rdzv_endpoint 127.0.0.1:PORT --rdzv_id ID \
        tests/training/torchrun_harness.py RECORD_DIR [...]                # on each of 2 "machines"
    accelerate launch --config_file CONFIG tests/training/torchrun_harness.py RECORD_DIR [...]

For the process of global rank N it writes:
- RECORD_DIR/rank-N.safetensors: the model's whole state dict (parameters and buffers) when training ends, with the
  rank, the process id and the launcher's placement (world_size, group_rank: the machine's rank, local_rank) in the
  file's metadata;
- RECORD_DIR/rank-N-steps.jsonl: one line per training micro-batch, `{"step": optimizer steps done before it,
  "epoch": the training set's epoch, "indices": the training set's indices in the batch (null for streamed data, which
  has none), "images": a digest of each image's pixels, as the model received them}`;
- RECORD_DIR/rank-N-decoded.txt: the name (the path, for image folders) of each training image the process read to
  decode, one per line, in order.

Nothing else changes: the same script, data, model and Trainer, each wrapped by a subclass that records and then
calls the original.
"""

import hashlib
import json
import os
import sys

import torch
from safetensors.torch import save_file

import supmae.data.datasets
from supmae.cli import run_script
from supmae.data.images import image_name
from supmae.data.transforms import PretrainingTransform
from supmae.tasks import pretraining


RECORD_DIR = ""


def record_file(suffix: str) -> str:
    return os.path.join(RECORD_DIR, f"rank-{os.environ.get('RANK', '0')}{suffix}")


def append_line(suffix: str, line: str) -> None:
    with open(record_file(suffix), "a") as file:  # one short append per line: safe from dataloader workers too
        file.write(line + "\n")


class IndexedImages(pretraining.TransformedImageDataset):
    """Items carry their index, for the record."""

    def __getitem__(self, index):
        return {**super().__getitem__(index), "sample_index": int(index)}


class IndexKeepingCollator(pretraining.ImageCollator):
    """Batches carry their items' indices as `sample_index (B,)`."""

    def __call__(self, items):
        batch = super().__call__(items)
        if "sample_index" in items[0]:
            batch["sample_index"] = torch.tensor([item["sample_index"] for item in items])
        return batch


class RecordingTrainer(pretraining.SupMAETrainer):
    """Records each training micro-batch's indices, and saves the state dict when training ends."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        indices = inputs.pop("sample_index", None)
        step = {
            "step": self.state.global_step,
            "epoch": getattr(self.train_dataset, "epoch", None),
            "indices": None if indices is None else indices.tolist(),
            "images": [
                hashlib.sha1(image.cpu().numpy().tobytes()).hexdigest()[:16] for image in inputs["pixel_values"]
            ],
        }
        append_line("-steps.jsonl", json.dumps(step))
        return super().training_step(model, inputs, num_items_in_batch)

    def train(self, *args, **kwargs):
        result = super().train(*args, **kwargs)
        state = {
            k: v.detach().cpu().contiguous() for k, v in self.accelerator.unwrap_model(self.model).state_dict().items()
        }
        metadata = {"rank": os.environ.get("RANK", "0"), "pid": str(os.getpid())}
        # Where the launcher placed the process: its machine's rank (torchrun's GROUP_RANK), its rank on that machine.
        metadata.update({key.lower(): os.environ.get(key, "") for key in ("WORLD_SIZE", "GROUP_RANK", "LOCAL_RANK")})
        save_file(state, record_file(".safetensors"), metadata=metadata)
        return result


_apply_transform = supmae.data.datasets.apply_transform


def recording_apply_transform(transform, value, rng):
    """supmae.data.datasets.apply_transform, recording the training images (those for the pretraining transform)."""
    if isinstance(transform, PretrainingTransform):
        append_line("-decoded.txt", image_name(value))
    return _apply_transform(transform, value, rng)


def main(argv: list[str]) -> None:
    global RECORD_DIR
    RECORD_DIR = argv[0]
    os.makedirs(RECORD_DIR, exist_ok=True)
    pretraining.TransformedImageDataset = IndexedImages
    pretraining.ImageCollator = IndexKeepingCollator
    pretraining.SupMAETrainer = RecordingTrainer
    supmae.data.datasets.apply_transform = recording_apply_transform  # looked up at call time by both dataset kinds
    run_script(pretraining.main, argv[1:])  # as the script runs main()


if __name__ == "__main__":
    main(sys.argv[1:])
