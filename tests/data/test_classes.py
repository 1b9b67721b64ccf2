"""supmae.data.classes: ImageNet's WordNet ids, the named 200-class subsets (timm's), subsets from files, and labels
mapped into the model's classes."""

import importlib.resources
import json

import pytest

from supmae.data.classes import CLASS_SUBSETS, imagenet_synsets, labels_to_model_space, load_class_subset


def test_labels_to_model_space_rejects_labels_outside_the_subset():
    with pytest.raises(ValueError, match="Label 1 is not in the class subset"):
        labels_to_model_space([0, 1, 2], [4, 0, 2], labels_in_subset=False)
    with pytest.raises(ValueError, match="Label 3 is not a position in the 3-class subset"):
        labels_to_model_space([0, 3], [4, 0, 2], labels_in_subset=True)


def _timm_info(name):
    return (importlib.resources.files("timm") / "data" / "_info" / name).read_text().split()


@pytest.mark.parametrize("name", sorted(CLASS_SUBSETS))
def test_named_subsets_are_timms_200_classes(name):
    subset = load_class_subset(name)
    assert len(subset) == 200 and len(set(subset)) == 200
    assert subset == sorted(subset) and 0 <= subset[0] and subset[-1] < 1000
    # timm's indices are 0-based positions in the sorted ImageNet-1k synsets: mapping its synset list agrees.
    synsets = _timm_info("imagenet_synsets.txt")
    assert synsets == sorted(synsets) and len(set(synsets)) == 1000
    assert [synsets[i] for i in subset] == _timm_info(name.replace("-", "_") + "_synsets.txt")
    assert load_class_subset(name.upper()) == subset


def test_imagenet_synsets_are_the_standard_order():
    synsets = imagenet_synsets()
    assert len(synsets) == 1000 and synsets[0] == "n01440764" and synsets[-1] == "n15075141"


def test_subset_from_wordnet_id_file(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("n01484850\nn01440764\n\nn01443537\n")
    assert load_class_subset(str(path)) == [2, 0, 1]


def test_subset_from_index_file_json_and_inline(tmp_path):
    (tmp_path / "indices.txt").write_text("7 3,\n999\n")
    assert load_class_subset(str(tmp_path / "indices.txt")) == [7, 3, 999]
    (tmp_path / "classes.json").write_text(json.dumps([5, "n01443537", "12"]))
    assert load_class_subset(str(tmp_path / "classes.json")) == [5, 1, 12]
    assert load_class_subset("3, 1,4") == [3, 1, 4]
    assert load_class_subset("2,0", num_labels=3) == [2, 0]


def test_subset_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown class subset 'imagenet-x'.*imagenet-a.*imagenet-r"):
        load_class_subset("imagenet-x")
    with pytest.raises(ValueError, match="WordNet id n99999999 is not one of the 1000"):
        load_class_subset("n01440764,n99999999")
    with pytest.raises(ValueError, match=r"Class index 1000 .* outside \[0, 1000\)"):
        load_class_subset("1,1000")
    with pytest.raises(ValueError, match=r"Class index -1 .* outside \[0, 10\)"):
        load_class_subset("-1", num_labels=10)
    with pytest.raises(ValueError, match="Class index 3 appears more than once"):
        load_class_subset("3,4,3")
    with pytest.raises(ValueError, match="num_labels=10"):
        load_class_subset("imagenet-a", num_labels=10)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        load_class_subset(str(tmp_path / "empty.txt"))
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(ValueError, match="is empty"):
        load_class_subset(str(tmp_path / "empty.json"))
    (tmp_path / "dict.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="must hold a JSON list"):
        load_class_subset(str(tmp_path / "dict.json"))
    (tmp_path / "words.txt").write_text("goldfish\n")
    with pytest.raises(ValueError, match="'goldfish' is neither a class index nor a WordNet id"):
        load_class_subset(str(tmp_path / "words.txt"))
