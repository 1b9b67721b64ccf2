"""Generated data for the tests: image folders whose classes can be learned (shapes) or not (noise)."""

import numpy as np
from PIL import Image, ImageDraw


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
