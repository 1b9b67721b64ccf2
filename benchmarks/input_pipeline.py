#!/usr/bin/env python
# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
The pretraining input pipeline, images/s per core: JPEG decode + RandomResizedCrop(224, scale 0.2-1, bicubic) +
horizontal flip + normalize, `supmae.data.PretrainingTransform` against the plain torchvision reference (full PIL
decode, `transforms.RandomResizedCrop`, `ToTensor`, `Normalize`), on real photographs.

    python benchmarks/input_pipeline.py [--size 500x375] [--images 32] [--rounds 7] [--output results.json]
    python benchmarks/input_pipeline.py --prepared 256     # also ours on the files as prepare_dataset leaves them

The photos are the two that ship inside scikit-learn (china.jpg, flower.jpg, 640x427), cut into varied crops,
resized to --size (ImageNet-like: about 500x375, either orientation) and re-encoded as JPEG quality 90. One thread,
rounds interleaved (ours, reference, ours, ...), medians reported. It also checks that the two pipelines'
outputs have the same statistics (per-channel mean and standard deviation over all the images and rounds).

`--prepared N` adds a third arm: our pipeline on the same photos re-encoded as `python -m supmae.prepare_dataset
--max_side N` leaves them (shorter side capped at N), timed against the same reference on the originals. It also
records what the cap changes in the crops (`crop_statistics`): how much the crops are upsampled to the output size,
and how sharp the outputs are (mean absolute difference of horizontally adjacent pixels, 0-255 units), for the same
random draws on the originals and on the prepared files.
"""

import argparse
import io
import os
import platform
import random
import statistics
import sys
import time

import numpy as np
import PIL.Image
import torch
import torchvision
import torchvision.transforms as T

from supmae.data.prepare import reencode
from supmae.data.transforms import IMAGENET_MEAN, IMAGENET_STD, PretrainingTransform, random_resized_crop_box


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def photos(count: int, size: tuple[int, int], seed: int = 0) -> list[bytes]:
    """`count` JPEG files (quality 90) of about `size` pixels, from scikit-learn's sample photographs."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    sources = [PIL.Image.fromarray(image) for image in load_sample_images().images]
    files = []
    for i in range(count):
        source = sources[i % len(sources)]
        width, height = (size if i % 4 else size[::-1]) if size[0] != size[1] else size  # a quarter in portrait
        scale = rng.uniform(0.6, 1.0)  # a random window of the photo, then resized to the target size
        crop_w, crop_h = int(source.width * scale), int(source.height * scale)
        left, top = rng.integers(0, source.width - crop_w + 1), rng.integers(0, source.height - crop_h + 1)
        image = source.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), PIL.Image.BICUBIC)
        if rng.random() < 0.5:
            image = image.transpose(PIL.Image.FLIP_LEFT_RIGHT)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        files.append(buffer.getvalue())
    return files


def reference_transform(image_size: int):
    return T.Compose(
        [
            T.RandomResizedCrop(image_size, scale=(0.2, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def run_reference(files, transform):
    return [transform(PIL.Image.open(io.BytesIO(data)).convert("RGB")) for data in files]


def run_ours(files, transform, rng):
    # The encoded files, as TransformedImageDataset hands them over (datasets' Image(decode=False)).
    return [transform(data, rng) for data in files]


def crop_statistics(files, transform, draws: int = 8) -> dict:
    """What the crops of `transform` are made of, over `draws` seeded draws per file (the same seeds for any set of
    files): the fraction upsampled (fewer source pixels than output pixels along the crop's shorter side), the median
    of output size / crop's shorter side, and the outputs' sharpness (mean absolute difference of horizontally
    adjacent output pixels, 0-255 units)."""
    scales, sharpness = [], []
    std = torch.tensor(transform.std).view(3, 1, 1) * 255
    for index, data in enumerate(files):
        width, height = PIL.Image.open(io.BytesIO(data)).size
        for draw in range(draws):
            left, top, right, bottom = random_resized_crop_box(
                width, height, transform.scale, transform.ratio, random.Random(index * draws + draw)
            )
            scales.append(min(transform.image_size) / min(right - left, bottom - top))
            pixels = transform(data, random.Random(index * draws + draw)) * std
            sharpness.append((pixels[:, :, 1:] - pixels[:, :, :-1]).abs().mean().item())
    return {
        "upsampled_fraction": float(np.mean(np.array(scales) > 1)),
        "median_scale": float(np.median(scales)),
        "sharpness": float(np.mean(sharpness)),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="500x375", help="WxH of the JPEG files (default ImageNet-like 500x375).")
    parser.add_argument("--image_size", type=int, default=224, help="The crop size.")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--prepared",
        type=int,
        metavar="MAX_SIDE",
        help="Also time ours on the files re-encoded by prepare_dataset with this cap on the shorter side.",
    )
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the prepared files (default 90).")
    parser.add_argument("--output", help="Append the result to this JSON file.")
    options = parser.parse_args(argv)
    with common.torch_threads(1):  # images/s per core
        return measure(options)


def measure(options) -> dict:
    size = tuple(int(v) for v in options.size.lower().split("x"))
    files = photos(options.images, size)
    ours, reference = PretrainingTransform(options.image_size), reference_transform(options.image_size)
    rng = random.Random(0)
    torch.manual_seed(0)
    arms = {"ours": lambda: run_ours(files, ours, rng), "torchvision": lambda: run_reference(files, reference)}
    if options.prepared is not None:
        prepared = [reencode(data, options.prepared, options.quality) for data in files]
        arms["ours_prepared"] = lambda: run_ours(prepared, ours, rng)
    for run in arms.values():  # warm-up
        run()
    times = {name: [] for name in arms}
    outputs = {name: [] for name in arms}
    for _ in range(options.rounds):
        for name, run in arms.items():
            start = time.perf_counter()
            batch = run()
            times[name].append(time.perf_counter() - start)
            outputs[name].append(torch.stack(batch))
    per_second = {name: len(files) / statistics.median(values) for name, values in times.items()}
    statistics_of = {}
    for name, batches in outputs.items():
        pixels = torch.cat(batches).transpose(0, 1).reshape(3, -1)  # (3, all pixels), normalized units
        statistics_of[name] = {"mean": pixels.mean(1).tolist(), "std": pixels.std(1).tolist()}
    result = {
        "benchmark": "input_pipeline",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, 1 thread",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
        "jpeg_size": options.size,
        "image_size": options.image_size,
        "images": len(files),
        "rounds": options.rounds,
        "images_per_second_per_core": {k: round(v, 1) for k, v in per_second.items()},
        "ratio": round(per_second["ours"] / per_second["torchvision"], 3),
        "output_statistics": statistics_of,
    }
    if options.prepared is not None:
        result["prepared_max_side"] = options.prepared
        result["ratio_prepared"] = round(per_second["ours_prepared"] / per_second["torchvision"], 3)
        result["prepared_bytes_per_image"] = round(sum(map(len, prepared)) / len(prepared))
        result["original_bytes_per_image"] = round(sum(map(len, files)) / len(files))
        result["crop_statistics"] = {
            "originals": crop_statistics(files, ours),
            "prepared": crop_statistics(prepared, ours),
        }
    print(f"{options.size} JPEG -> {options.image_size} px, one core, median of {options.rounds} rounds:")
    for name, value in per_second.items():
        print(f"  {name:12s} {value:8.1f} images/s   {1000 / value:6.2f} ms/image")
    print(f"  ratio        {result['ratio']:.2f}x")
    if options.prepared is not None:
        print(
            f"  ratio, ours on prepared files (shorter side <= {options.prepared}) vs reference on originals: "
            f"{result['ratio_prepared']:.2f}x"
        )
        for name, stats in result["crop_statistics"].items():
            print(
                f"  crops from {name:9s}: {stats['upsampled_fraction']:.0%} upsampled, median scale "
                f"{stats['median_scale']:.2f}x, sharpness {stats['sharpness']:.2f}"
            )
    for name, stats in statistics_of.items():
        print(f"  {name:12s} mean {np.round(stats['mean'], 3).tolist()} std {np.round(stats['std'], 3).tolist()}")
    if options.output:
        common.append_json(options.output, result)
    return result


if __name__ == "__main__":
    main()
