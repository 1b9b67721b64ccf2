#!/usr/bin/env python
# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
The pretraining input pipeline, images/s per core: JPEG decode + RandomResizedCrop(224, scale 0.2-1, bicubic) +
horizontal flip + normalize, `supmae.data.PretrainingTransform` against the plain torchvision reference (full PIL
decode, `transforms.RandomResizedCrop`, `ToTensor`, `Normalize`), on real photographs.

    python benchmarks/input_pipeline.py [--size 500x375] [--images 32] [--rounds 7] [--output results.json]

The photos are the two that ship inside scikit-learn (china.jpg, flower.jpg, 640x427), cut into varied crops,
resized to --size (ImageNet-like: about 500x375, either orientation) and re-encoded as JPEG quality 90. One thread,
rounds interleaved (ours, reference, ours, ...), medians reported. It also checks that the two pipelines'
outputs have the same statistics (per-channel mean and standard deviation over all the images and rounds).
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

from supmae.data import IMAGENET_MEAN, IMAGENET_STD, PretrainingTransform


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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="500x375", help="WxH of the JPEG files (default ImageNet-like 500x375).")
    parser.add_argument("--image_size", type=int, default=224, help="The crop size.")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
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
    run_ours(files, ours, rng), run_reference(files, reference)  # warm-up
    times = {"ours": [], "torchvision": []}
    outputs = {"ours": [], "torchvision": []}
    for _ in range(options.rounds):
        for name, run in (
            ("ours", lambda: run_ours(files, ours, rng)),
            ("torchvision", lambda: run_reference(files, reference)),
        ):
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
    print(f"{options.size} JPEG -> {options.image_size} px, one core, median of {options.rounds} rounds:")
    for name, value in per_second.items():
        print(f"  {name:12s} {value:8.1f} images/s   {1000 / value:6.2f} ms/image")
    print(f"  ratio        {result['ratio']:.2f}x")
    for name, stats in statistics_of.items():
        print(f"  {name:12s} mean {np.round(stats['mean'], 3).tolist()} std {np.round(stats['std'], 3).tolist()}")
    if options.output:
        common.append_json(options.output, result)
    return result


if __name__ == "__main__":
    main()
