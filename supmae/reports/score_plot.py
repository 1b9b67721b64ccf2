# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""The transfer suite's plot: each dataset's score against the number of shots."""

import math
import os

import PIL.Image
import PIL.ImageDraw


def plot_scores(summary: dict, path: str, width: int = 720, height: int = 440) -> None:
    """Score (percent) against images per class (log scale), one thin line per dataset and the average thick, with
    its spread over seeds as error bars. Drawn with PIL (no plotting dependency)."""
    shots = summary["shots"]
    image = PIL.Image.new("RGB", (width, height), "white")
    draw = PIL.ImageDraw.Draw(image)
    left, right, top, bottom = 60, width - 170, 20, height - 50
    logs = [math.log(k) for k in shots]
    span = (max(logs) - min(logs)) or 1.0

    def at(k, score):
        x = left + (math.log(k) - min(logs)) / span * (right - left) if len(shots) > 1 else (left + right) / 2
        return x, bottom - score / 100 * (bottom - top)

    draw.rectangle([left, top, right, bottom], outline="black")
    for score in range(0, 101, 20):
        y = at(shots[0], score)[1]
        draw.line([left - 4, y, left, y], fill="black")
        draw.text((left - 30, y - 6), str(score), fill="black")
    for k in shots:
        x = at(k, 0)[0]
        draw.line([x, bottom, x, bottom + 4], fill="black")
        draw.text((x - 8, bottom + 8), str(k), fill="black")
    draw.text(((left + right) / 2 - 50, height - 22), "images per class", fill="black")
    draw.text((8, 4), "score (%)", fill="black")
    colors = [
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
        "#17becf",
    ]
    series = [
        (name, entry["shots"], colors[i % len(colors)], 1)
        for i, (name, entry) in enumerate(summary["datasets"].items())
    ]
    series.append(("average", summary["average"], "black", 3))
    for row, (name, points, color, line_width) in enumerate(series):
        xy = [at(k, points[k]["mean"]) for k in shots if k in points]
        if len(xy) > 1:
            draw.line(xy, fill=color, width=line_width)
        for (x, y), k in zip(xy, [k for k in shots if k in points], strict=True):
            spread = points[k]["std"] / 100 * (bottom - top)
            draw.line([x, y - spread, x, y + spread], fill=color, width=1)
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        legend_y = top + 4 + 16 * row
        draw.line([right + 10, legend_y + 6, right + 30, legend_y + 6], fill=color, width=line_width)
        draw.text((right + 36, legend_y), name[:20], fill="black")
    path_tmp = path + ".tmp.png"
    image.save(path_tmp)
    os.replace(path_tmp, path)
