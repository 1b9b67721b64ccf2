"""Names that become part of a path (evaluation sets' report files, a transfer suite's results folders, few-shot run
folders) are single file names, refused when the arguments are read, with one paragraph naming the option and the
value; and every such path is checked again when it is written: it stays inside --output_dir (issue 19, item 1)."""

import os

import pytest
import yaml
from helpers import SHAPES, tiny_config, write_shapes_folder

from supmae import SupMAEForImageClassification
from supmae.cli import run_script
from supmae.tasks import classification
from supmae.tasks.transfer import load_suite, result_path
from supmae.training.files import MAX_NAME_LENGTH, path_inside


COMMON = ["--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true", "--dataloader_num_workers", "0"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A tiny fine-tuned classifier of the three shapes, and a folder of them to evaluate it on."""
    root = tmp_path_factory.mktemp("eval-names")
    classes = {"id2label": dict(enumerate(SHAPES)), "label2id": {name: i for i, name in enumerate(SHAPES)}}
    SupMAEForImageClassification(tiny_config(num_labels=3, **classes)).save_pretrained(root / "classifier")
    write_shapes_folder(root / "shapes", per_class=2)
    return root


def victim(tmp_path):
    """Another model's directory beside the output directory, whose config.json must survive."""
    SupMAEForImageClassification(tiny_config(num_labels=3)).save_pretrained(tmp_path / "victim")
    return (tmp_path / "victim" / "config.json").read_bytes()


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("x/../../victim/config", "it holds a path separator"),  # the audit's: it replaced the victim's config.json
        ("x/../../../ESCAPED", "it holds a path separator"),  # the audit's: it wrote two levels above
        ("..", "'..' names a folder"),
        ("x\\..\\..\\victim", "it holds a path separator"),  # a separator on Windows
        ("a\nb", "it holds a control character"),
        ("a\0b", "it holds a control character"),
        ("x" * (MAX_NAME_LENGTH + 1), f"it is {MAX_NAME_LENGTH + 1} characters long"),
    ],
)
def test_an_evaluation_set_name_cannot_leave_the_output_directory(classifier, tmp_path, capsys, name, problem):
    kept = victim(tmp_path)
    capsys.readouterr()  # save_pretrained's progress bars
    spec = f"{name}={classifier / 'shapes'}"
    argv = ["--mode", "eval", "--model_name_or_path", str(classifier / "classifier")]
    argv += ["--output_dir", str(tmp_path / "runs" / "eval"), "--eval_datasets", spec, *COMMON]
    with pytest.raises(SystemExit) as exit_info:
        run_script(classification.main, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --eval_datasets entry {spec!r}: the name {name!r}"), err
    assert problem in err[0] and "single name" in err[0]
    assert (tmp_path / "victim" / "config.json").read_bytes() == kept
    assert sorted(os.listdir(tmp_path)) == ["victim"]  # nothing written, not even the output directory


def test_a_plain_evaluation_set_name_is_written_inside(classifier, tmp_path):
    argv = ["--mode", "eval", "--model_name_or_path", str(classifier / "classifier"), "--output_dir", str(tmp_path)]
    classification.main([*argv, "--eval_datasets", f"shapes v2.0={classifier / 'shapes'}", *COMMON])
    assert (tmp_path / "eval_shapes v2.0.json").is_file()


def test_the_written_path_is_checked_again(tmp_path):
    """The last guard, for a name that reached a write by another way: the resolved path stays inside."""
    (tmp_path / "out").mkdir()
    os.symlink(tmp_path, tmp_path / "out" / "link")
    assert path_inside(tmp_path / "out", "results", "a", "5-shot-seed-0.json") == str(
        tmp_path / "out" / "results" / "a" / "5-shot-seed-0.json"
    )
    for parts in (["..", "x.json"], ["link", "x.json"], ["results", "..", "..", "x"], ["."], [str(tmp_path / "x")]):
        with pytest.raises(ValueError, match="outside the output directory"):
            path_inside(tmp_path / "out", *parts)
    with pytest.raises(ValueError, match="outside the output directory"):
        result_path(str(tmp_path / "out"), "../../elsewhere", 5, 0)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("a\\b", "it holds a path separator"),
        ("a\tb", "it holds a control character"),
        ("x" * (MAX_NAME_LENGTH + 1), "characters long"),
        ("", "it is empty"),
        ("a/b", "it holds a path separator"),
    ],
)
def test_a_suite_dataset_name_is_one_folder_name(tmp_path, name, problem):
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"datasets": [{"name": name, "train": "x", "test": "y", "metric": "accuracy"}]}))
    with pytest.raises(ValueError, match=r"suite.yaml: datasets\[0\].*'name' must be a unique string") as raised:
        load_suite(str(suite))
    assert problem in str(raised.value)


@pytest.mark.parametrize("seeds", ["0,../x", "0,0", "", "1,a"])
def test_few_shot_seeds_are_refused_when_read(tmp_path, seeds):
    with pytest.raises(ValueError, match=r"--few_shot_seeds distinct comma-separated integers"):
        classification.parse(["--output_dir", str(tmp_path), "--few_shot", "2", "--few_shot_seeds", seeds])
