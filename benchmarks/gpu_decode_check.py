#!/usr/bin/env python
# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
GPU decoding (`--decode_device cuda`) against the CPU path, image by image, and its speed. Exits with status 1 when
any image disagrees beyond the tolerance, so that a script running it notices.

    python benchmarks/gpu_decode_check.py --device cuda [--images 512] [--batch_size 256] [--output results.json]
    python benchmarks/gpu_decode_check.py --device cpu --images 16      # the same plumbing with libjpeg-turbo

The images: real photographs at about 500x375 (JPEG quality 90, a quarter in portrait), plus files the workers must
route to the CPU path (a progressive JPEG, a CMYK JPEG, a PNG, an EXIF-rotated JPEG). For each image i, the CPU path
is `PretrainingTransform(224)` with the generator of item i (`_sample_rng(0, 0, i)`); the GPU path is
`DeviceDecodeTransform` with the same generator, `EncodedImageCollator`, then `BatchDecoder` on --device.

Tolerance, in gray levels (0-255) per image: mean < --mean_tolerance (0.6) and max < --max_tolerance (8). That is the
bound within which the CPU path itself agrees with torchvision's PIL reference (tests/data/test_transforms.py,
`test_fast_transform_matches_the_torchvision_reference`): a GPU path within it of the CPU path is as close to the
reference as the two CPU pipelines are to each other, give or take the same again. On a CPU (libjpeg-turbo on both
sides, only the resize differs) the agreement is far tighter: tests/data/test_gpu_decode.py asserts max <= 2, mean
< 0.02. Files routed to the CPU path must agree exactly.

Speed: images/s of `BatchDecoder` (decode + crop + resize + flip + normalize) over batches of --batch_size, and of
the decode call alone (nvJPEG), median of --rounds.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time

import PIL.Image
import torch
import torchvision
from torchvision.io import ImageReadMode, decode_jpeg


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from input_pipeline import photos  # noqa: E402

from supmae.data.datasets import _sample_rng
from supmae.data.gpu_decode import BatchDecoder, DeviceDecodeTransform, EncodedCrop, EncodedImageCollator
from supmae.data.transforms import PretrainingTransform


def routed_files(seed: int = 0) -> dict[str, bytes]:
    """Files the workers decode on the CPU (not for nvJPEG), from the same photographs."""
    image = PIL.Image.open(io.BytesIO(photos(1, (500, 375), seed=seed)[0]))
    files = {}
    for name, kwargs, converted in (
        ("progressive.jpg", {"format": "JPEG", "quality": 90, "progressive": True}, image),
        ("cmyk.jpg", {"format": "JPEG", "quality": 90}, image.convert("CMYK")),
        ("photo.png", {"format": "PNG"}, image),
    ):
        buffer = io.BytesIO()
        converted.save(buffer, **kwargs)
        files[name] = buffer.getvalue()
    exif = PIL.Image.Exif()
    exif[PIL.Image.ExifTags.Base.Orientation] = 6  # rotated 90 degrees
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, exif=exif)
    files["rotated.jpg"] = buffer.getvalue()
    return files


def compare(cpu: torch.Tensor, device: torch.Tensor, std) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image mean and max absolute difference in gray levels (0-255) between `(N, 3, S, S)` normalized batches."""
    difference = ((cpu - device.cpu()) * torch.tensor(std).view(1, 3, 1, 1) * 255).abs().flatten(1)
    return difference.mean(1), difference.max(1).values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=512, help="Photographs to compare (default 512).")
    parser.add_argument("--batch_size", type=int, default=256, help="Images per decoded batch (default 256).")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5, help="Timed rounds of each batch (default 5).")
    parser.add_argument("--mean_tolerance", type=float, default=0.6, help="Per-image mean, gray levels (0.6).")
    parser.add_argument("--max_tolerance", type=float, default=8.0, help="Per-image max, gray levels (8).")
    parser.add_argument("--output", help="Append the result to this JSON list.")
    args = parser.parse_args(argv)

    files = photos(args.images, (500, 375)) + list(routed_files().values())
    names = [f"photo {i}" for i in range(args.images)] + list(routed_files())
    cpu_transform = PretrainingTransform(args.image_size)
    worker = DeviceDecodeTransform(cpu_transform)
    decoder = BatchDecoder.for_transform(cpu_transform, args.device)
    collate = EncodedImageCollator(args.image_size)
    cpu = torch.stack([cpu_transform(data, _sample_rng(0, 0, i)) for i, data in enumerate(files)])
    items = [{"pixel_values": worker(data, _sample_rng(0, 0, i))} for i, data in enumerate(files)]
    routed = [i for i, item in enumerate(items) if not isinstance(item["pixel_values"], EncodedCrop)]

    outputs, batch_times, decode_times = [], [], []
    for first in range(0, len(items), args.batch_size):
        batch = collate(items[first : first + args.batch_size])["pixel_values"]
        outputs.append(decoder(batch).cpu())
        files_only = batch.files()
        for _ in range(args.rounds):
            common.synchronize(args.device)
            start = time.perf_counter()
            decoder(batch)
            common.synchronize(args.device)
            batch_times.append((time.perf_counter() - start) / batch.size)
            if files_only:
                start = time.perf_counter()
                decode_jpeg(files_only, mode=ImageReadMode.RGB, device=args.device)
                common.synchronize(args.device)
                decode_times.append((time.perf_counter() - start) / len(files_only))
    mean, worst = compare(cpu, torch.cat(outputs), cpu_transform.std)
    gray = compare(
        cpu.mean(1, keepdim=True).expand_as(cpu),
        torch.cat(outputs).mean(1, keepdim=True).expand_as(cpu),
        cpu_transform.std,
    )[0]
    # The decoders alone, on whole images: nvJPEG (on --device) against libjpeg-turbo.
    sample = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in files[: min(32, args.images)]]
    whole = zip(
        decode_jpeg(sample, mode=ImageReadMode.RGB),
        decode_jpeg(sample, mode=ImageReadMode.RGB, device=args.device),
        strict=True,
    )
    decoder_difference = [(a.float() - b.cpu().float()).abs() for a, b in whole]
    bad = [i for i in range(len(files)) if mean[i] >= args.mean_tolerance or worst[i] >= args.max_tolerance]
    bad += [i for i in routed if worst[i] > 0 and i not in bad]  # the CPU path's own output: exactly equal
    expected_routes = set(range(args.images, len(files)))
    result = {
        "benchmark": "gpu_decode_check",
        "machine": common.machine_info(args.device),
        "torchvision": torchvision.__version__,
        "images": len(files),
        "routed_to_cpu": [names[i] for i in routed],
        "routing_as_expected": set(routed) == expected_routes,
        "mean_abs_difference": float(mean[: args.images].mean()),
        "max_image_mean_difference": float(mean.max()),
        "max_abs_difference": float(worst.max()),
        "gray_mean_abs_difference": float(gray[: args.images].mean()),  # channels averaged: chroma differences cancel
        "decoder_only": {
            "mean_abs_difference": float(torch.stack([d.mean() for d in decoder_difference]).mean()),
            "max_abs_difference": float(max(d.max() for d in decoder_difference)),
        },
        "tolerance": {"mean": args.mean_tolerance, "max": args.max_tolerance},
        "disagreeing": [names[i] for i in bad],
        "agrees": not bad and set(routed) == expected_routes,
        "batch_decoder_images_per_second": 1 / statistics.median(batch_times),
        "decode_only_images_per_second": 1 / statistics.median(decode_times),
        "batch_size": args.batch_size,
    }
    print(
        f"GPU decode check on {args.device}: {len(files)} images, mean |diff| {result['mean_abs_difference']:.3f}, "
        f"worst image mean {result['max_image_mean_difference']:.3f}, max {result['max_abs_difference']:.0f} gray "
        f"levels (tolerance: mean < {args.mean_tolerance}, max < {args.max_tolerance}); routed to the CPU path: "
        f"{', '.join(result['routed_to_cpu']) or 'none'}; "
        f"{'AGREES' if result['agrees'] else 'DISAGREES: ' + ', '.join(result['disagreeing'][:10])}"
    )
    print(
        f"  decoders alone (whole images, {args.device} vs libjpeg-turbo): mean "
        f"{result['decoder_only']['mean_abs_difference']:.3f}, max {result['decoder_only']['max_abs_difference']:.0f}; "
        f"after the pipeline, channels averaged: mean {result['gray_mean_abs_difference']:.3f}"
    )
    print(
        f"  BatchDecoder {result['batch_decoder_images_per_second']:.0f} img/s (decode + crop + resize + flip + "
        f"normalize), decode alone {result['decode_only_images_per_second']:.0f} img/s, batches of {args.batch_size}"
    )
    if args.output:
        common.append_json(args.output, result)
    return 0 if result["agrees"] else 1


if __name__ == "__main__":
    sys.exit(main())
