"""What the tests share: the one tiny model (and the command-line flags derived from it), random weights in the
official layout, command lines for the tasks, generated image data, and the small trainers several modules train.

Imported as `helpers` from every folder of tests/ (conftest.py puts tests/ on sys.path). It is not a test module:
nothing here is collected, and no test module imports another."""

import argparse
import io
import os
import runpy

import numpy as np
import torch
from PIL import Image, ImageDraw
from reference import reference_supmae as ref
from transformers import TrainingArguments, UperNetConfig, UperNetForSemanticSegmentation

from supmae import SupMAEConfig, SupMAEForPreTraining
from supmae.data.collators import ImageCollator
from supmae.tasks import pretraining
from supmae.training.arguments import SupMAETrainingArguments
from supmae.training.pretraining import SupMAETrainer


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: run_*.py, benchmarks/, docs/

# ------------------------------------------------------------------------------------------------- the tiny model
# A 2-layer, 32-wide SupMAE on 32x32 images with 8x8 patches (L = 16), a 2-layer 16-wide decoder and 5 classes: the
# model of every test, in Python (`tiny_config`) and on the command line (`config_overrides`).
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    image_size=32,
    patch_size=8,
    decoder_hidden_size=16,
    decoder_num_hidden_layers=2,
    decoder_num_attention_heads=2,
    decoder_intermediate_size=64,
    supervised_head_hidden_size=24,
    num_labels=5,
)
# The head counts a converter cannot tell from TINY's shapes (tiny widths match no released model).
HEADS = {name: TINY[name] for name in ("num_attention_heads", "decoder_num_attention_heads")}


def tiny_config(**overrides) -> SupMAEConfig:
    """TINY as a config, with `overrides` applied."""
    return SupMAEConfig(**{**TINY, **overrides})


def config_overrides(**changes) -> str:
    """TINY (with `changes`) as the scripts' `--config_overrides` string, e.g. "hidden_size=32,...". The number of
    classes is left out: a training run takes it from its data."""
    fields = {name: value for name, value in {**TINY, **changes}.items() if name != "num_labels"}
    return ",".join(f"{name}={value}" for name, value in fields.items())


def official_state_dict(config: SupMAEConfig, seed: int = 0, **kwargs) -> dict:
    """Random weights in the official pretraining layout for `config`'s architecture (tests/reference/)."""
    return ref.random_official_state_dict(
        hidden_size=config.hidden_size,
        depth=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        mlp_ratio=config.intermediate_size / config.hidden_size,
        decoder_hidden_size=config.decoder_hidden_size,
        decoder_depth=config.decoder_num_hidden_layers,
        decoder_num_heads=config.decoder_num_attention_heads,
        decoder_mlp_ratio=config.decoder_intermediate_size / config.decoder_hidden_size,
        patch_size=config.patch_size,
        num_channels=config.num_channels,
        image_size=config.image_size,
        head_hidden_size=config.supervised_head_hidden_size,
        num_labels=config.num_labels,
        seed=seed,
        **kwargs,
    )


def save_official(path, state_dict, **args):
    """The official file format: a torch pickle with the weights under "model" and an argparse.Namespace."""
    arguments = argparse.Namespace(
        **{"model": "mae_vit_base_patch16", "norm_pix_loss": True, "mask_ratio": 0.75, **args}
    )
    torch.save({"model": state_dict, "optimizer": {}, "epoch": 399, "scaler": {}, "args": arguments}, path)
    return str(path)


def backbone_config(**overrides) -> SupMAEConfig:
    """TINY with 4 blocks: an encoder with the 4 stages a feature pyramid takes."""
    return tiny_config(**{"num_hidden_layers": 4, **overrides})


def tiny_upernet(num_labels=3, **overrides) -> UperNetForSemanticSegmentation:
    """UperNet (16-wide decode head, 8-wide auxiliary head) on `backbone_config`'s encoder and feature pyramid."""
    config = UperNetConfig(
        backbone_config=backbone_config(add_fpn=True, **overrides),
        num_labels=num_labels,
        hidden_size=16,
        auxiliary_channels=8,
    )
    return UperNetForSemanticSegmentation(config)


# -------------------------------------------------------------------------------------------------- command lines
def flags(**values) -> list[str]:
    """Command-line flags from keyword arguments: flags(max_steps=4, streaming=True, scale=(64, 32)) is
    ["--max_steps", "4", "--streaming", "true", "--scale", "64", "32"]."""
    arguments = []
    for name, value in values.items():
        items = value if isinstance(value, list | tuple) else [value]
        arguments += [f"--{name}", *(str(v).lower() if isinstance(v, bool) else str(v) for v in items)]
    return arguments


QUIET = flags(report_to="none", disable_tqdm=True, use_cpu=True)  # every test run: no trackers, no bars, the CPU
PRETRAINING = dict(
    config_overrides=config_overrides(),
    per_device_train_batch_size=4,
    per_device_eval_batch_size=4,
    report_to="none",
    disable_tqdm=True,
    use_cpu=True,
    num_figure_images=2,
    logging_steps=2,
)

# run_segmentation.py's tiny set-up: a 4-block encoder (the feature pyramid's 4 stages), 32 px crops of 64 px images,
# no random rescaling or colour jitter.
TINY_SEGMENTATION = dict(
    config_name="vit-small-patch16",
    config_overrides=config_overrides(num_hidden_layers=4),
    crop_size=32,
    stride=16,
    scale=(64, 32),
    ratio_range=(1, 1),
    photometric_distortion=False,
)


def pretraining_arguments(*arguments, **values) -> list[str]:
    """A run_pretraining.py command line for the tiny model at batch 4 on the CPU: PRETRAINING updated with `values`,
    then `arguments` as given (flags and values; a flag given twice takes its last value)."""
    return [*flags(**{**PRETRAINING, **values}), *map(str, arguments)]


def pretrain(*arguments, **values) -> dict:
    """`pretraining.main` (what run_pretraining.py runs) on `pretraining_arguments(*arguments, **values)`."""
    return pretraining.main(pretraining_arguments(*arguments, **values))


def demo_arguments(script: str) -> list[str]:
    """The DEMO_ARGUMENTS of the repository's `script` ("run_pretraining.py", ...), read by running the file as a
    module (its `if __name__ == "__main__"` part does not run)."""
    return runpy.run_path(os.path.join(ROOT, script))["DEMO_ARGUMENTS"]


def script_env(**extra) -> dict:
    """The environment of a test's subprocess: this checkout's package, one thread per process."""
    return {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", **extra}


# ----------------------------------------------------------------------------------------------------- image data
def write_image_folder(root, classes=("cat", "dog"), per_class=3, size=(40, 30), flat=False):
    """Random RGB JPEGs, in one subfolder per class (or directly in `root` with `flat=True`)."""
    rng = np.random.default_rng(0)
    for name in classes:
        folder = root if flat else root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{name}_{i}.jpg")
    return root


SHAPES = ("circle", "square", "triangle")


def draw_shape(shape: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One filled `shape` at a random size and position on a dark random background, `size` x `size`. Each shape has
    its own dominant color channel (circles red, squares green, triangles blue), with random shades: easy to learn."""
    background = rng.integers(0, 90, 3)
    image = Image.new("RGB", (size, size), tuple(int(v) for v in background))
    draw = ImageDraw.Draw(image)
    extent = rng.uniform(0.45, 0.8) * size
    left, top = rng.uniform(0, size - extent, 2)
    box = [left, top, left + extent, top + extent]
    color = rng.integers(0, 120, 3)
    color[SHAPES.index(shape) % 3] = rng.integers(180, 256)
    color = tuple(int(v) for v in color)
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    else:
        draw.polygon([(left + extent / 2, top), (left, top + extent), (left + extent, top + extent)], fill=color)
    return image


def write_shapes_folder(root, per_class: int = 24, size: int = 32, seed: int = 0, classes=SHAPES):
    """An image folder (one subfolder per class) of `per_class` PNGs of each shape: a learnable 3-class set."""
    rng = np.random.default_rng(seed)
    for shape in classes:
        folder = root / shape
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw_shape(shape, size, rng).save(folder / f"{shape}_{i}.png")
    return root


# The files of `write_zoo`: odd but valid images (converted), and broken ones (skipped).
ODD = {"good.jpg", "cmyk.jpg", "gray16.png", "palette_transparent.png", "rgba.png", "gray.jpg", "one_pixel.png"}
BROKEN = {"corrupt.jpg", "truncated.jpg", "empty.jpg", "not_an_image.jpg", "bomb.png"}


def write_zoo(folder) -> None:
    """Odd but valid images (converted) and broken files (skipped), as a class folder would hold them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
    rgb.save(folder / "good.jpg", quality=90)
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 65536, (40, 50)).astype(np.uint16)).save(folder / "gray16.png")
    rgb.convert("P").save(folder / "palette_transparent.png", transparency=0)
    rgb.convert("RGBA").save(folder / "rgba.png")
    rgb.convert("L").save(folder / "gray.jpg")
    Image.new("RGB", (1, 1), (10, 200, 30)).save(folder / "one_pixel.png")
    encoded = io.BytesIO()
    rgb.save(encoded, "JPEG", quality=90)
    data = encoded.getvalue()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    corrupt = bytearray(data)
    corrupt[200:600] = rng.integers(0, 256, 400, dtype=np.uint8).tobytes()
    (folder / "corrupt.jpg").write_bytes(bytes(corrupt))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "not_an_image.jpg").write_text("this is not an image\n")
    Image.new("1", (20000, 20000)).save(folder / "bomb.png")  # 400 M pixels in 48 kB: over PIL's 179 M limit


def logged_names(log_file) -> set[str]:
    """The file names a skipped-images list (skipped_images.tsv) holds."""
    return {os.path.basename(line.split("\t")[0].split(" (item")[0]) for line in open(log_file).read().splitlines()}


def write_ade20k_folder(root, counts=None, size=(24, 16)):
    """ADEChallengeData2016's layout: random `images/<split>/ADE_i.jpg` and annotations of classes 0..3 beside them."""
    counts = counts or {"training": 3, "validation": 2}
    rng = np.random.default_rng(0)
    for folder, count in counts.items():
        (root / "images" / folder).mkdir(parents=True)
        (root / "annotations" / folder).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
                root / "images" / folder / f"ADE_{i}.jpg"
            )
            Image.fromarray(rng.integers(0, 4, size, dtype=np.uint8)).save(
                root / "annotations" / folder / f"ADE_{i}.png"
            )


STD = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)


def gray_levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| of normalized images in gray levels (0-255)."""
    return ((a - b) * STD * 255).abs()


# ------------------------------------------------------------------------------------------------------- trainers
class RandomImages(torch.utils.data.Dataset):
    """`n` random 32x32 images, with random labels of 5 classes (or none)."""

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


def random_images_trainer(tmp_path, labels=True, **overrides) -> SupMAETrainer:
    """A SupMAETrainer of the tiny model on 16 random images (8 for evaluation), 4 steps at batch 4, into
    tmp_path / "out"; `overrides` change its TrainingArguments."""
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


class PoisonedEpochs(torch.utils.data.Dataset):
    """16 random images; every image of the epochs in `poisoned` is NaN."""

    def __init__(self, poisoned):
        self.poisoned, self.epoch = set(poisoned), 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return 16

    def __getitem__(self, index):
        pixels = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(index))
        return {"pixel_values": pixels * float("nan") if self.epoch in self.poisoned else pixels, "labels": index % 5}


def nonfinite_loss_trainer(output, dataset, on_nonfinite_loss) -> SupMAETrainer:
    """A SupMAETrainer of the tiny model (seeded) on `dataset`: 3 epochs at batch 4, a checkpoint every epoch, a log
    every step, and `--on_nonfinite_loss` as given."""
    torch.manual_seed(0)
    args = SupMAETrainingArguments(
        output_dir=str(output),
        per_device_train_batch_size=4,
        num_train_epochs=3,
        save_strategy="epoch",
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        on_nonfinite_loss=on_nonfinite_loss,
        learning_rate=1e-3,
    )
    return SupMAETrainer(
        model=SupMAEForPreTraining(tiny_config()), args=args, train_dataset=dataset, data_collator=ImageCollator(5)
    )
