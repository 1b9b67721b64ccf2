"""supmae.tasks.transfer (what run_transfer.py runs): the suite file, string class names, the summary and its plot, and
the suite end to end on generated datasets (a single-label and a multi-label one), with resuming after a kill.
(ELEVATER's few-shot draws: tests/data/test_few_shot.py; the multi-label loss: tests/training/test_transfer.py.)"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import QUIET, ROOT, flags, tiny_config
from PIL import Image

from supmae import SupMAEForPreTraining
from supmae.reports.score_plot import plot_scores
from supmae.tasks import transfer
from supmae.tasks.transfer import (
    DataSource,
    FewShotRunner,
    SuiteDataset,
    TransferData,
    existing_result,
    load_suite,
    summarize_suite,
    summary_markdown,
)


# ------------------------------------------------------------------------------------------------------ the suite
def write_suite(path, text):
    path.write_text(text)
    return str(path)


def test_suite_file_is_read_with_its_defaults(tmp_path):
    suite = load_suite(
        write_suite(
            tmp_path / "s.yaml",
            """
datasets:
  - {name: a, train: /data/a/train, test: /data/a/test, metric: accuracy}
  - name: b
    train: {source: user/b, split: train, label_column: fine_label}
    test: {source: user/b, split: test}
    metric: 11point_mAP
grid:
  linprobe: {learning_rate: [0.1, 1], weight_decay: 0.001}
holdout_fraction: 0.25
""",
        )
    )
    assert [d.name for d in suite.datasets] == ["a", "b"] and suite.holdout_fraction == 0.25
    assert suite.datasets[0].train.source == "/data/a/train" and suite.datasets[0].train.split is None
    assert suite.datasets[1].train.label_column == "fine_label" and suite.datasets[1].multi_label
    assert suite.grid_for("linprobe") == [
        {"learning_rate": 0.1, "weight_decay": 0.001},
        {"learning_rate": 1.0, "weight_decay": 0.001},
    ]
    assert len(suite.grid_for("finetune")) == 3  # the default grid


@pytest.mark.parametrize(
    "text, message",
    [
        ("datasets: []", "non-empty list 'datasets'"),
        ("datasets: [{name: a, train: x, test: y}]", r"datasets\[0\] \(a\): missing \['metric'\]"),
        (
            "datasets: [{name: a, train: x, test: y, metric: top1}]",
            r"datasets\[0\] \(a\): 'metric' must be one of \['accuracy', 'mean_per_class', '11point_mAP', 'roc_auc'\]",
        ),
        ("datasets: [{name: a, train: x, test: y, metric: accuracy, shots: 5}]", r"unknown keys \['shots'\]"),
        (
            "datasets: [{name: a, train: x, test: y, metric: accuracy}, {name: a, train: x, test: y, metric: accuracy}]",
            r"datasets\[1\] \(a\): 'name' must be a unique string",
        ),
        (
            "datasets: [{name: .., train: x, test: y, metric: accuracy}]",
            r"'name' must be a unique string .* got '\.\.'",
        ),
        (
            "datasets: [{name: null, train: x, test: y, metric: accuracy}]",
            r"'name' must be a unique string .* got None",
        ),
        (
            "datasets: [{name: a, train: {source: [x, y]}, test: y, metric: accuracy}]",
            r"datasets\[0\] \(a\): train: 'source' must be a non-empty string, got \['x', 'y'\]",
        ),
        (
            "datasets: [{name: a, train: {source: x, split: [t, v]}, test: y, metric: accuracy}]",
            r"train: 'split' must be a non-empty string",
        ),
        (
            "datasets: [{name: a, train: x, test: y, metric: accuracy}]\ngrid: {finetune: {learning_rate: .inf}}",
            "grid.finetune.learning_rate must be a non-negative number",
        ),
        ("datasets: [{name: a, train: {path: x}, test: y, metric: accuracy}]", r"datasets\[0\] \(a\): train must be"),
        (
            "datasets: [{name: a, train: {source: x, splits: t}, test: y, metric: accuracy}]",
            r"train: unknown keys \['splits'\]",
        ),
        (
            "datasets: [{name: a, train: x, test: y, metric: accuracy}]\ngrid: {linprobe: {lr: [1]}}",
            r"grid.linprobe takes \['learning_rate', 'weight_decay'\]",
        ),
        (
            "datasets: [{name: a, train: x, test: y, metric: accuracy}]\ngrid: {finetune: {learning_rate: [-1]}}",
            "grid.finetune.learning_rate must be a non-negative number",
        ),
        (
            "datasets: [{name: a, train: x, test: y, metric: accuracy}]\nholdout_fraction: 20",
            r"must be a number in \(0, 1\)",
        ),
        (
            "datasets: [{name: a, train: x, test: y, metric: accuracy}]\nseeds: [1]",
            r"unknown top-level keys \['seeds'\]",
        ),
        ("datasets: [a: b: c]", "is not valid YAML"),
    ],
)
def test_suite_mistakes_name_the_file_the_entry_and_the_field(tmp_path, text, message):
    path = write_suite(tmp_path / "suite.yaml", text)
    with pytest.raises(ValueError, match=message) as error:
        load_suite(path)
    assert path in str(error.value)


def write_named_folder(folder, labels):
    """An image folder whose metadata.jsonl gives each image a `label` value (strings or lists)."""
    folder.mkdir(parents=True)
    rows = []
    for i, label in enumerate(labels):
        Image.new("RGB", (8, 8), (40 * i % 256, 0, 0)).save(folder / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "label": label}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return DataSource(str(folder), label_column="label")


def test_string_labels_become_the_train_splits_sorted_classes(tmp_path):
    train = write_named_folder(tmp_path / "train", ["red", "blue", "red", "green"])
    test = write_named_folder(tmp_path / "test", ["green", "red"])
    data = TransferData.load(SuiteDataset("named", train, test, "accuracy"))
    assert data.names == ["blue", "green", "red"] and data.labels() == [2, 0, 2, 1]
    assert list(data.test[data.test_label_column]) == [1, 2]
    odd = write_named_folder(tmp_path / "odd", ["purple"])
    with pytest.raises(ValueError, match=r"'named': the test split has classes that train lacks: \['purple'\]"):
        TransferData.load(SuiteDataset("named", train, odd, "accuracy"))


def test_labels_and_metric_must_agree_on_multi_label(tmp_path):
    lists = write_named_folder(tmp_path / "lists", [[0, 1], [1], [0]])
    with pytest.raises(
        ValueError,
        match=r"'voc': its labels \(column 'label'\) are lists, and metric 'accuracy' "
        "scores single-label data: multi-label data takes 11point_mAP",
    ):
        TransferData.load(SuiteDataset("voc", lists, lists, "accuracy"))
    single = write_named_folder(tmp_path / "single", [0, 1, 0])
    with pytest.raises(ValueError, match="are single classes, and metric '11point_mAP' scores multi-label data"):
        TransferData.load(SuiteDataset("voc", single, single, "11point_mAP"))
    with pytest.raises(ValueError, match=r"Suite dataset 'voc', test \(.*missing\): Couldn't find any data"):
        TransferData.load(SuiteDataset("voc", single, DataSource(str(tmp_path / "missing")), "accuracy"))


def test_the_shipped_elevater_suite_is_valid():
    suite = load_suite(os.path.join(ROOT, "suites", "elevater.yaml"))
    assert len(suite.datasets) == 20
    metrics = {d.name: d.metric for d in suite.datasets}
    assert [n for n, m in metrics.items() if m == "mean_per_class"] == [
        "caltech101",
        "fgvc-aircraft",
        "flowers102",
        "oxford-pets",
    ]
    assert metrics["voc2007"] == "11point_mAP" and metrics["hateful-memes"] == "roc_auc"
    assert sum(m == "accuracy" for m in metrics.values()) == 14


# ------------------------------------------------------------------------------------------------------ the summary
def record(dataset, shots, seed, score, metric="accuracy"):
    return {
        "dataset": dataset,
        "shots": shots,
        "seed": seed,
        "metrics": {"score": score},
        "settings": {"metric": metric},
    }


def test_summary_by_hand(tmp_path):
    records = [
        record("a", 5, 0, 0.5),
        record("a", 5, 1, 0.7),
        record("b", 5, 0, 0.3, "roc_auc"),
        record("b", 5, 1, 0.1, "roc_auc"),
        record("a", 20, 0, 0.9),
    ]
    summary = summarize_suite(records, ["a", "b"], [5, 20], [0, 1])
    a5 = summary["datasets"]["a"]["shots"][5]
    assert a5["mean"] == pytest.approx(60.0) and a5["std"] == pytest.approx(np.std([50, 70], ddof=1))
    # The average: per seed over datasets (40, 40), then over seeds.
    assert summary["average"][5]["runs"] == pytest.approx([40.0, 40.0]) and summary["average"][5]["std"] == 0.0
    assert 20 not in summary["average"]  # b has no 20-shot results: no average
    assert summary["datasets"]["b"]["metric"] == "roc_auc" and 20 not in summary["datasets"]["b"]["shots"]
    markdown = summary_markdown(summary, "m", "linprobe")
    assert "| a | accuracy | 60.00 ± 14.14 | 90.00 ± 0.00 |" in markdown
    assert "| b | roc_auc | 20.00 ± 14.14 | — |" in markdown
    assert "| **average over 2** | | 40.00 ± 0.00 | — |" in markdown
    plot_scores(summary, str(tmp_path / "scores.png"))
    image = np.asarray(Image.open(tmp_path / "scores.png").convert("RGB"))
    assert image.shape == (440, 720, 3)
    assert (image == [31, 119, 180]).all(-1).sum() > 20  # dataset a's color is drawn


def test_a_result_made_with_other_settings_is_not_mixed_in(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"settings": {"model": "m1", "mode": "linprobe"}}))
    assert existing_result(str(path), {"model": "m1", "mode": "linprobe"})["settings"]["model"] == "m1"
    with pytest.raises(ValueError, match=r"r.json was made with another model \('m1', now 'm2'\)"):
        existing_result(str(path), {"model": "m2", "mode": "linprobe"})
    path.write_text("{")
    with pytest.raises(ValueError, match="r.json is unreadable"):
        existing_result(str(path), {"model": "m1"})
    assert existing_result(str(tmp_path / "none.json"), {}) is None


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--mode", "eval"], "--mode must be linprobe or finetune"),
        (["--dataset_name", "digits"], "--dataset_name: the suite file names the data"),
        (["--shots", "1,5"], "--shots takes distinct integers of at least 2"),
        (["--seeds", "a"], "--seeds takes comma-separated integers"),
        (["--learning_rate", "0.1", "--weight_decay", "0"], "--learning_rate, --weight_decay: a transfer suite picks"),
        (["--linprobe_augment", "true"], "--linprobe_augment true: the suite's probe encodes each image once"),
    ],
)
def test_command_line_mistakes_are_named(tmp_path, arguments, message):
    suite = write_suite(tmp_path / "s.yaml", "datasets: [{name: a, train: x, test: y, metric: accuracy}]")
    with pytest.raises(ValueError, match=message):
        transfer.main(
            [*flags(suite=suite, model_name_or_path="m", output_dir=tmp_path / "o", mode="linprobe"), *arguments]
        )


def test_a_command_line_mistake_is_one_paragraph_not_a_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "run_transfer.py"),
            "--suite",
            "missing.yaml",
            "--model_name_or_path",
            "m",
            "--output_dir",
            str(tmp_path),
            "--mode",
            "linprobe",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: The suite file missing.yaml does not exist."


# ------------------------------------------------------------------------------------------------- end to end
COLORS = [(220, 40, 40), (40, 200, 40), (40, 40, 220)]


def noisy(color, rng, size=32):
    return np.clip(np.array(color, float) + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 3-class color dataset (image folders) and a multi-label one (image folder + metadata.jsonl: the colors of
    the left and right halves), with a tiny pretraining checkpoint."""
    root = tmp_path_factory.mktemp("transfer")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 10), ("test", 8)):
        for c, color in enumerate(COLORS):
            folder = root / "colors" / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(noisy(color, rng)).save(folder / f"{i}.png")
        folder = root / "halves" / split
        folder.mkdir(parents=True)
        rows = []
        for i in range(12 * per_class // 4):
            left, right = rng.integers(0, 3, 2)
            pixels = np.concatenate([noisy(COLORS[left], rng)[:, :16], noisy(COLORS[right], rng)[:, 16:]], axis=1)
            Image.fromarray(pixels).save(folder / f"{i}.png")
            rows.append(json.dumps({"file_name": f"{i}.png", "labels": sorted({int(left), int(right)})}))
        (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    torch.manual_seed(0)
    SupMAEForPreTraining(tiny_config(num_labels=3)).save_pretrained(root / "pretrained")
    (root / "suite.yaml").write_text(f"""
grid:
  finetune: {{learning_rate: [3.0e-4, 3.0e-3]}}
  linprobe: {{learning_rate: [0.1, 1.0]}}
datasets:
  - {{name: colors, train: {root}/colors/train, test: {root}/colors/test, metric: accuracy}}
  - name: halves
    train: {{source: {root}/halves/train, label_column: labels}}
    test: {{source: {root}/halves/test, label_column: labels}}
    metric: 11point_mAP
""")
    return root


TINY_TRAINING = [
    *flags(per_device_train_batch_size=8, per_device_eval_batch_size=32),
    *QUIET,
    *flags(dataloader_num_workers=0, logging_steps=50),
]
FINETUNE = flags(mode="finetune", max_steps=10, auto_augment="none", mixup=0, cutmix=0, reprob=0, min_crop_scale=0.5)


def run_suite_on(data, output_dir, *arguments):
    """The module's suite of generated datasets, from its tiny pretraining checkpoint, into `output_dir`."""
    suite = flags(suite=data / "suite.yaml", model_name_or_path=data / "pretrained", output_dir=output_dir)
    return transfer.main([*suite, *TINY_TRAINING, *arguments])


def load_records(output_dir):
    return {
        path.relative_to(output_dir / "results").as_posix(): json.loads(path.read_text())
        for path in sorted((output_dir / "results").rglob("*.json"))
    }


@pytest.mark.slow
def test_fine_tuning_suite_end_to_end(data, tmp_path):
    """Two datasets x shots 4 x seeds 0, 1: a record per run with the grid searched on the held-out fifth, scores
    well above chance, and a summary that is the records' mean and spread. A rerun finds everything done."""
    summary = run_suite_on(data, tmp_path, *FINETUNE, "--shots", "4", "--seeds", "0,1")
    records = load_records(tmp_path)
    assert sorted(records) == [f"{d}/4-shot-seed-{s}.json" for d in ("colors", "halves") for s in (0, 1)]
    for result in records.values():
        assert len(result["grid"]) == 2 and {"holdout_score"} <= set(result["grid"][0])
        best = max(result["grid"], key=lambda point: point["holdout_score"])
        assert result["chosen"]["learning_rate"] == best["learning_rate"]
        assert result["num_few_shot"] == len(result["few_shot_indices"])
    colors = [records[f"colors/4-shot-seed-{s}.json"] for s in (0, 1)]
    assert [r["num_few_shot"] for r in colors] == [12, 12] and colors[0]["num_held_out"] == 3
    assert colors[0]["few_shot_indices"] != colors[1]["few_shot_indices"]
    # Learning: chance is 1/3 for the colors; the halves' mAP of a head that ranks at random is about 0.5.
    assert min(r["metrics"]["score"] for r in colors) >= 0.9
    assert min(records[f"halves/4-shot-seed-{s}.json"]["metrics"]["score"] for s in (0, 1)) >= 0.85
    scores = [100 * r["metrics"]["score"] for r in colors]
    assert summary["datasets"]["colors"]["shots"][4]["mean"] == pytest.approx(np.mean(scores))
    assert summary["datasets"]["colors"]["shots"][4]["std"] == pytest.approx(np.std(scores, ddof=1))
    written = json.loads((tmp_path / "summary.json").read_text())["metrics"]
    assert written["average"]["4"]["mean"] == pytest.approx(summary["average"][4]["mean"])
    assert "| colors | accuracy |" in (tmp_path / "summary.md").read_text()
    assert Image.open(tmp_path / "scores.png").size == (720, 440)

    before = {name: (tmp_path / "results" / name).stat().st_mtime_ns for name in records}
    original_run = FewShotRunner.run
    FewShotRunner.run = lambda *a, **k: pytest.fail("a finished suite trained again")
    try:
        run_suite_on(data, tmp_path, *FINETUNE, "--shots", "4", "--seeds", "0,1")
    finally:
        FewShotRunner.run = original_run
    assert {name: (tmp_path / "results" / name).stat().st_mtime_ns for name in records} == before


@pytest.mark.slow
def test_linear_probing_suite_end_to_end(data, tmp_path):
    """The probe: encoder features computed once per dataset, a fresh head per run; scores well above chance. 12 shots
    of classes with 10 training images take all 10 (ELEVATER's draw) and say so in the record."""
    summary = run_suite_on(
        data, tmp_path, "--mode", "linprobe", "--num_train_epochs", "40", "--shots", "6,12", "--seeds", "0"
    )
    records = load_records(tmp_path)
    assert records["colors/6-shot-seed-0.json"]["metrics"]["score"] >= 0.9
    assert records["colors/6-shot-seed-0.json"]["classes_with_fewer_images"] == {}
    twelve = records["colors/12-shot-seed-0.json"]
    assert twelve["num_few_shot"] == 30 and twelve["num_held_out"] == 6  # ceil(0.2 x 10) per class
    assert twelve["classes_with_fewer_images"] == {"0": 10, "1": 10, "2": 10} and twelve["metrics"]["score"] >= 0.9
    assert summary["average"][6]["std"] == 0.0  # one seed
    # Multi-label 11-point mAP: 0.53 with MAE's LARS at this batch (its step barely moves the head), hence the
    # probe's momentum SGD below an effective batch of 4096.
    assert records["halves/6-shot-seed-0.json"]["metrics"]["score"] >= 0.85


@pytest.mark.slow
def test_an_unreadable_test_image_is_left_out_of_the_score(data, tmp_path):
    """--bad_images skip leaves an unreadable test image out: 11 of 12 images are scored, each with its own label (a
    row carrying a neighbour's label, or the neighbour scored twice, would cost a perfect probe a point or a count)."""
    rng = np.random.default_rng(1)
    for split, per_class in (("train", 10), ("test", 4)):
        for c, color in enumerate(COLORS):
            (tmp_path / split / f"c{c}").mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(noisy(color, rng)).save(tmp_path / split / f"c{c}" / f"{i}.png")
    (tmp_path / "test" / "c0" / "3.png").write_bytes(
        b"not an image"
    )  # the last of class 0: class 1's first follows it
    suite = write_suite(
        tmp_path / "suite.yaml",
        f"datasets: [{{name: colors, train: {tmp_path}/train, test: {tmp_path}/test, metric: accuracy}}]",
    )
    run = flags(suite=suite, model_name_or_path=data / "pretrained", output_dir=tmp_path / "out")
    probe = flags(mode="linprobe", num_train_epochs=40, shots=6, seeds=0)
    transfer.main([*run, *TINY_TRAINING, *probe])
    record = load_records(tmp_path / "out")["colors/6-shot-seed-0.json"]
    assert record["metrics"]["score"] == 1.0 and record["num_test"] == 11
    assert "c0/3.png" in (tmp_path / "out" / "skipped_images.tsv").read_text()


@pytest.mark.slow
def test_a_killed_suite_resumes_at_the_first_missing_result(data, tmp_path):
    """SIGKILL the suite once its first result is written; the rerun keeps that result as it is and runs the rest."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"datasets: [{{name: colors, train: {data}/colors/train, test: {data}/colors/test, "
        "metric: accuracy}]\ngrid: {finetune: {learning_rate: 3.0e-3}}\n"
    )
    command = [
        sys.executable,
        os.path.join(ROOT, "run_transfer.py"),
        "--suite",
        str(suite),
        "--model_name_or_path",
        str(data / "pretrained"),
        "--output_dir",
        str(tmp_path / "out"),
        *TINY_TRAINING,
        *FINETUNE,
        "--shots",
        "4",
        "--seeds",
        "0,1,2",
    ]
    first = tmp_path / "out" / "results" / "colors" / "4-shot-seed-0.json"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not first.exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert first.exists(), "the suite wrote no result before the deadline"
    done = sorted(p.name for p in first.parent.iterdir() if p.suffix == ".json")
    assert len(done) < 3 and not (tmp_path / "out" / "summary.json").exists()

    def state(name):  # a rewrite, even with the same bytes, would change the modification time
        return (first.parent / name).read_bytes(), (first.parent / name).stat().st_mtime_ns

    kept = {name: state(name) for name in done}

    summary = transfer.main(command[2:])
    assert sorted(p.name for p in first.parent.iterdir() if p.suffix == ".json") == [
        f"4-shot-seed-{s}.json" for s in (0, 1, 2)
    ]
    assert {name: state(name) for name in done} == kept  # not run again
    assert len(summary["datasets"]["colors"]["shots"][4]["runs"]) == 3
    assert not [p for p in first.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "flag, value",
    [("lr_scheduler_type", "linear"), ("max_grad_norm", "0.5"), ("seed", "3"), ("adam_beta1", "0.8")],
)
def test_a_result_depends_on_every_training_option(flag, value, tmp_path):
    """Issue 19: the settings a result is keyed by held the model and the grid only, so a rerun with another
    scheduler, clipping, seed or beta reused the old records and averaged them with the new ones."""
    suite = load_suite(os.path.join(ROOT, "suites", "elevater.yaml"))
    entry = suite.datasets[0]
    argv = ["--suite", os.path.join(ROOT, "suites", "elevater.yaml"), "--model_name_or_path", "m"]
    argv += ["--output_dir", str(tmp_path)]

    def settings(*extra):
        model_args, _, args, _ = transfer.classification.parse(
            [*argv, *extra], "run_transfer.py", extra=(transfer.TransferArguments,)
        )
        return transfer.run_settings(suite, entry, model_args, args)

    before, after = settings(), settings(f"--{flag}", value)
    assert before != after and before[flag] != after[flag]
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"settings": before}))
    with pytest.raises(ValueError, match=f"another {flag}"):
        transfer.existing_result(str(path), after)
