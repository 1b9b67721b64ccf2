"""The headline numbers of the README and the guides against the records behind them, so that a stale number fails.

Each check reads a number where the docs state it and compares it with the record it comes from: the demo's top-1
(docs/records/demo.json), the segmentation demo's scores (docs/records/segmentation-demo.json), benchmark ratios
(benchmarks/results/), the equivalence table and its tolerances (docs/records/equivalence.json and the tolerances
the tests assert), the digits study (examples/results/digits_study.json) and the paper's robustness numbers (the
table `supmae.tasks.robustness` prints). Records are read as files and test modules as source (ast), never imported.
"""

import ast
import json
import re
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "docs" / "records"


def read(name: str) -> str:
    return (ROOT / name).read_text()


def record(name: str):
    return json.loads((ROOT / name).read_text())


def module_constant(path: str, name: str):
    """The literal value of a module-level assignment `name = ...` in a source file (dict keys like `torch.float64`
    become their attribute name, `float64`)."""
    for node in ast.parse(read(path)).body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == name for target in node.targets):
            value = node.value
            if isinstance(value, ast.Dict):
                keys = [key.attr if isinstance(key, ast.Attribute) else ast.literal_eval(key) for key in value.keys]
                return dict(zip(keys, (ast.literal_eval(v) for v in value.values), strict=True))
            return ast.literal_eval(value)
    raise AssertionError(f"{path} assigns no {name}")


def stated(text: str, pattern: str, where: str):
    """What `pattern`'s groups match in `text`: found at least once, and the same wherever it is stated."""
    matches = re.findall(pattern, text)
    assert matches, f"{where}: nothing matches {pattern!r}"
    assert len(set(matches)) == 1, f"{where}: {pattern!r} states different values: {matches}"
    return matches[0]


def table_row(text: str, label: str, where: str) -> list[str]:
    """The cells after the first of the markdown table row whose first cell starts with `label`."""
    rows = [line for line in text.splitlines() if line.startswith(f"| {label}")]
    assert len(rows) == 1, f"{where}: expected one table row starting with {label!r}, found {len(rows)}"
    return [cell.strip() for cell in rows[0].strip().strip("|").split("|")][1:]


def two_digits(value: float) -> str:
    """A difference as the docs write it: 2 significant digits, `1.9e-6`."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


# ------------------------------------------------------------------------------------------------------ the records
@pytest.mark.parametrize("path", sorted(RECORDS.glob("*.json")), ids=lambda path: path.name)
def test_every_record_says_how_when_and_where_it_was_made(path):
    data = json.loads(path.read_text())
    assert data["command"] and data["date"] and data["machine"], path.name
    assert {"torch", "transformers"} <= set(data["versions"]), path.name


# ------------------------------------------------------------------------------------------------------ the demos
def demo_top1() -> dict[str, float]:
    return record("docs/records/demo.json")["classification"]["top1"]


@pytest.mark.parametrize("document", ["README.md", "docs/CLASSIFICATION.md"])
@pytest.mark.parametrize("split", ["validation", "test"])
def test_the_demo_top1_is_the_recorded_one(document, split):
    said = stated(read(document), rf"`?{split}: top-1 (\d\.\d{{4}})", document)
    assert said == f"{demo_top1()[split]:.4f}", f"{document} says {split} top-1 {said}; the record says otherwise"


def test_the_pretraining_demo_output_is_the_recorded_one():
    printed = record("docs/records/demo.json")["pretraining"]["printed"]
    validation = next(line for line in printed if line.startswith("Validation: "))
    assert validation in read("docs/PRETRAINING.md")


def test_the_demo_floor_stated_is_the_one_asserted():
    floor = module_constant("tests/tasks/test_classification.py", "DEMO_FLOOR")
    said = stated(read("docs/CLASSIFICATION.md"), r"asserts a test top-1 of at least (\d\.\d+)", "CLASSIFICATION.md")
    assert float(said) == floor
    assert demo_top1()["test"] >= floor


def test_the_segmentation_demo_scores_are_the_recorded_ones():
    runs = record("docs/records/segmentation-demo.json")["runs"]
    text = read("docs/SEGMENTATION.md")
    for run, label in (
        ("pretrained", "SupMAE pretraining demo"),
        ("random_init", "its architecture, random weights"),
        ("background_everywhere", "predicting background everywhere"),
    ):
        cells = table_row(text, label, "SEGMENTATION.md")
        expected = [f"{runs[run][key]:.3f}" for key in ("mean_iou", "mean_accuracy", "overall_accuracy")]
        assert [cell.strip("*") for cell in cells[:3]] == expected, (label, cells, expected)


# -------------------------------------------------------------------------------------------------- the benchmarks
def arms(path: str, script: str, batch_size: int, compile: bool, comparison: str | None = None) -> dict:
    """The arms of the one benchmark point of `path` measured by `script` at that batch, compiled or not."""
    found = [
        point["arms"]
        for entry in record(path)
        if entry.get("script") == script
        and entry["args"]["compile"] == compile
        and (comparison is None or entry["args"].get("comparison") == comparison)
        for point in entry["results"]
        if point["batch_size"] == batch_size
    ]
    assert len(found) == 1, (path, script, batch_size, compile, len(found))
    return found[0]


GPU = "benchmarks/results/gpu-h200-20261127.json"
CPU = "benchmarks/results/cpu.json"
RATIO_ROWS = {  # table label -> (ours, baseline) images/s from the records
    "H200 training step, ViT-B/16 + 8-block decoder, batch 128, compiled": lambda: (
        (a := arms(GPU, "train_step.py", 128, True))["supmae_dec8"]["images_per_s"],
        a["vitmae_dec8"]["images_per_s"],
    ),
    "H200 training step, SupMAE's 1-block recipe vs ViTMAE's 8-block, batch 512, compiled": lambda: (
        (a := arms(GPU, "train_step.py", 512, True, "recipe"))["supmae_dec1"]["images_per_s"],
        a["vitmae_dec8"]["images_per_s"],
    ),
    "CPU training step, 1-block recipe vs ViTMAE's 8-block, batch 8": lambda: (
        (a := arms(CPU, "train_step.py", 8, False, "both"))["supmae_dec1"]["images_per_s"],
        a["vitmae_dec8"]["images_per_s"],
    ),
}


@pytest.mark.parametrize("document", ["README.md", "docs/PERFORMANCE.md"])
@pytest.mark.parametrize("label", RATIO_ROWS)
def test_benchmark_rows_are_their_records(document, label):
    ours, baseline = RATIO_ROWS[label]()
    cells = table_row(read(document), label, document)
    digits = 0 if ours > 100 else 2
    assert cells[0].startswith(f"{ours:.{digits}f} images/s"), (cells[0], ours)
    assert f"{baseline:.{digits}f} images/s" in cells[1], (cells[1], baseline)
    assert cells[2].strip("*") == f"{ours / baseline:.2f}×", (cells[2], ours / baseline)


def quiet_input_pipeline_runs() -> list[dict]:
    """The input-pipeline records of 2026-11-30 at 500x375 not marked preliminary (those ran under load)."""
    return [
        entry
        for entry in record(CPU)
        if entry.get("benchmark") == "input_pipeline"
        and entry["date"] == "2026-11-30"
        and entry["jpeg_size"] == "500x375"
        and not entry.get("note", "").startswith("preliminary")
    ]


def test_the_input_pipeline_range_is_the_quiet_runs_of_its_record():
    runs = quiet_input_pipeline_runs()
    ours = [entry["images_per_second_per_core"]["ours"] for entry in runs]
    reference = [entry["images_per_second_per_core"]["torchvision"] for entry in runs]
    ratios = [entry["ratio"] for entry in runs]
    assert len(runs) == 4 and "4 quiet runs, 2026-11-30" in read("docs/PERFORMANCE.md")
    expected = [
        f"{min(ours):.0f}–{max(ours):.0f} images/s",
        f"torchvision: {min(reference):.0f}–{max(reference):.0f} images/s",
        f"**{min(ratios):.2f}–{max(ratios):.2f}×**",
    ]
    for document in ("README.md", "docs/PERFORMANCE.md"):
        assert table_row(read(document), "input pipeline, 500×375 JPEG → 224", document) == expected, document


@pytest.mark.parametrize("max_side, how_stated", [(256, "`--max_side 256`"), (224, "224")])
def test_the_prepared_files_ratios_are_their_records(max_side, how_stated):
    runs = [entry for entry in quiet_input_pipeline_runs() if entry["prepared_max_side"] == max_side]
    ratios = [entry["ratio_prepared"] for entry in runs]
    said = stated(read("docs/PERFORMANCE.md"), rf"(\d\.\d\d–\d\.\d\d)× \({re.escape(how_stated)}\)", "PERFORMANCE.md")
    assert said == f"{min(ratios):.2f}–{max(ratios):.2f}"


# -------------------------------------------------------------------------------------------------- correctness
def equivalence() -> dict:
    return record("docs/records/equivalence.json")


def test_the_equivalence_tolerances_stated_are_the_ones_asserted():
    asserted = module_constant("tests/models/test_equivalence.py", "TOLERANCE")
    assert equivalence()["asserted_tolerances"] == asserted
    said = stated(read("README.md"), r"tests\s+assert\s+(\S+) in float64 and (\S+) in float32", "README.md")
    assert tuple(map(float, said)) == (asserted["float64"], asserted["float32"])
    for dtype in ("float64", "float32"):
        said = stated(read("docs/CORRECTNESS.md"), rf"\*\*{dtype}, (\S+)\*\*", "CORRECTNESS.md")
        assert float(said) == asserted[dtype], dtype


def test_the_equivalence_table_is_the_record():
    table = equivalence()["largest_absolute_difference"]
    text = read("docs/CORRECTNESS.md")
    for quantity in table["float64 eager"]:
        cells = table_row(text, f"{quantity} |", "CORRECTNESS.md")
        expected = [f"≤ {two_digits(table[c][quantity])}" if table[c][quantity] else "identical" for c in table]
        assert cells == expected, (quantity, cells, expected)


def test_the_largest_differences_in_the_readme_are_the_record():
    table = equivalence()["largest_absolute_difference"]
    largest = {
        dtype: max(value for column, row in table.items() if column.startswith(dtype) for value in row.values())
        for dtype in ("float64", "float32")
    }
    said = stated(read("README.md"), r"largest\s+differences\s+measured\s+are\s+(\S+)\s+and\s+(\S+?)\s", "README.md")
    assert said == (two_digits(largest["float64"]), two_digits(largest["float32"]))


def test_the_conversion_tolerances_stated_are_the_ones_asserted():
    text = read("docs/CONVERSION.md")
    timm = module_constant("tests/interop/test_timm_export.py", "TOLERANCE")
    said = stated(
        text, r"asserts (\S+) in float64, where the export is exact, and\s+(\S+) in float32", "CONVERSION.md"
    )
    assert tuple(float(x) for x in said) == (timm["float64"], timm["float32"])
    converted = stated(text, r"original state\s+dict within (\S+),", "CONVERSION.md")
    assert float(converted) == module_constant("tests/interop/test_convert.py", "ATOL")


# ---------------------------------------------------------------------------------------------- the digits study
def test_the_digits_study_table_is_its_record():
    summary = record("examples/results/digits_study.json")["summary"]
    text = read("examples/README.md")
    columns = ("linprobe-cls", "linprobe-mean", "finetune")
    for arm, results in summary.items():
        cells = table_row(text, f"{arm} |", "examples/README.md")
        for cell, column in zip(cells, columns, strict=True):
            result = results[column]
            runs = ", ".join(f"{100 * run:.1f}" for run in result["runs"])
            expected = f"{100 * result['mean']:.1f} ± {100 * result['std']:.1f} ({runs})"
            assert cell.replace("**", "").startswith(expected), (arm, column, cell, expected)


def test_the_digits_study_time_spread_is_its_record():
    per_seed = record("examples/results/digits_study.json")["per_seed"]
    pretraining = [per_seed[seed]["SupMAE"]["pretrain_seconds"] for seed in per_seed]
    said = stated(read("examples/README.md"), r"took up to (\d+)× longer", "examples/README.md")
    assert int(said) == round(max(pretraining) / min(pretraining))


# ------------------------------------------------------------------------------------------- the paper, as reported
def test_the_papers_robustness_numbers_are_the_ones_the_code_reports():
    reported = module_constant("supmae/tasks/robustness.py", "REPORTED_ROBUSTNESS")
    said = stated(read("README.md"), r"ImageNet-C mCE\s+(\d+\.\d) vs MAE's (\d+\.\d)", "README.md")
    assert tuple(map(float, said)) == (reported["SupMAE"]["imagenet-c"], reported["MAE"]["imagenet-c"])
