"""The model cards (`supmae.reports.model_card`, bodies in supmae/reports/templates/): every kind renders and round-trips
through huggingface_hub, the licence follows the starting weights, `datasets` and `base_model` name Hub repositories
only, and the renderer refuses a missing or unknown field.

Fast and offline. `ModelCard.validate()` is deliberately not called: it sends the card to the Hub's validation
endpoint, which needs the network. Parsing (`ModelCard(text)`, `ModelCard.load`) checks the YAML front matter locally.
"""

import argparse
import logging
import re
from pathlib import Path

import pytest
import torch
import yaml
from helpers import official_state_dict, tiny_config, write_shapes_folder
from huggingface_hub import ModelCard, ModelCardData
from transformers import UperNetConfig

from supmae.interop import convert
from supmae.reports import model_card
from supmae.tasks import classification
from supmae.training.arguments import SupMAETrainingArguments


FOLDER = Path(model_card.__file__).parent / "templates"
# Licence identifiers from the Hub's list (https://huggingface.co/docs/hub/repositories-licenses) that cards here use.
HUB_LICENSES = {"apache-2.0", "cc-by-nc-4.0", "mit", "other"}


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    """The Hub names in these cards are made up: their cards are not downloaded (a test that needs one sets it)."""
    import huggingface_hub

    def offline(repo_id, filename):
        raise OSError(f"{repo_id} is not reachable from the tests")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)


def front_matter(text: str) -> dict:
    match = re.match(r"---\n(.*?\n)---\n", text, re.DOTALL)
    assert match, "the card must start with YAML front matter"
    return yaml.safe_load(match.group(1))


def write_card(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "README.md").write_text(text)
    return directory


def loaded(text: str, tmp_path: Path) -> ModelCard:
    """The card as the Hub client reads it back from a README.md, checked to keep its metadata unchanged."""
    card = ModelCard.load(write_card(tmp_path / "card", text) / "README.md")
    assert card.data.to_dict() == front_matter(text)  # the YAML written is the YAML read
    assert ModelCard(str(card)).data.to_dict() == card.data.to_dict()  # and survives another save
    assert card.data.library_name == "transformers" and "supmae" in card.data.tags
    assert card.data.license in HUB_LICENSES
    assert card.text.lstrip().startswith("# ")  # the body follows the metadata
    return card


# ------------------------------------------------------------------------------------------------------ the cards
def report(source="an official SupMAE pretraining checkpoint", task="pretraining", checkpoint="supmae_pretrain.pth"):
    return convert.ConversionReport(
        checkpoint=checkpoint, source=source, task=task, md5="0123456789abcdef0123456789abcdef", used=162
    )


def converted(kind: str, checkpoint: str = "supmae_pretrain.pth") -> str:
    source, task = {
        "converted-supmae-pretrain": ("an official SupMAE pretraining checkpoint", "pretraining"),
        "converted-supmae-finetuned": ("an official fine-tuned checkpoint (SupMAE / MAE layout)", "classification"),
        "converted-mae": ("an official MAE pretraining checkpoint (with decoder)", "pretraining"),
    }[kind]
    return model_card.converted_model_card(
        tiny_config(),
        report(source, task, checkpoint),
        command="supmae-convert --checkpoint supmae_pretrain.pth --output_dir out",
        repo_id="someone/supmae-tiny",
    )


def pretraining(dataset="uoft-cs/cifar10", base_model=None, license=None) -> str:
    return model_card.pretraining_model_card(
        tiny_config(),
        dataset=dataset,
        metrics={"loss": 0.25, "classification_accuracy": 0.75},
        training={"labels": True, "effective batch": 8, "seed": 3},
        figure="reconstructions.png",
        base_model=base_model,
        command=["python", "run_pretraining.py", "--dataset_name", str(dataset)],
        license=license,
    )


def finetuned(dataset="uoft-cs/cifar10", base_model="someone/supmae-tiny", license=None) -> str:
    config = tiny_config(num_labels=2, id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1})
    return model_card.classification_model_card(
        config,
        mode="finetune",
        dataset=dataset,
        reports={"validation": {"top1": 0.875, "top5": 1.0, "num_samples": 8}},
        training={"effective batch": 8, "learning rate": 1e-3},
        base_model=base_model,
        command=["python", "run_classification.py", "--dataset_name", str(dataset)],
        license=license,
    )


def segmented(dataset="scene_parse_150", base_model="someone/supmae-tiny", license=None) -> str:
    backbone = tiny_config(out_features=["stage1", "stage2"])
    config = UperNetConfig(backbone_config=backbone, num_labels=2, id2label={0: "background", 1: "shape"})
    return model_card.segmentation_model_card(
        config,
        dataset=dataset,
        metrics={"eval_mean_iou": 0.4321, "eval_mean_accuracy": 0.5, "eval_runtime": 1.5},
        report="the encoder of someone/supmae-tiny (all tensors used)",
        training={"iterations": 4, "crop": 32},
        base_model=base_model,
        command=["python", "run_segmentation.py", "--dataset_name", str(dataset)],
        license=license,
    )


CARDS = {  # template: (its card, pipeline_tag)
    "pretraining": (pretraining, "image-feature-extraction"),
    "classification": (finetuned, "image-classification"),
    "segmentation": (segmented, "image-segmentation"),
    "converted-supmae-pretrain": (lambda: converted("converted-supmae-pretrain"), "image-feature-extraction"),
    "converted-supmae-finetuned": (lambda: converted("converted-supmae-finetuned"), "image-classification"),
    "converted-mae": (lambda: converted("converted-mae"), "image-feature-extraction"),
}


def test_templates_are_the_markdown_files_of_the_folder():
    assert set(model_card.TEMPLATES) == {path.stem for path in FOLDER.glob("*.md")} == set(CARDS)


@pytest.mark.parametrize("template", model_card.TEMPLATES)
def test_every_card_renders_and_round_trips_through_huggingface_hub(template, tmp_path):
    build, pipeline_tag = CARDS[template]
    text = build()
    assert "{{" not in text and "}}" not in text
    card = loaded(text, tmp_path)
    assert card.data.pipeline_tag == pipeline_tag
    assert "## Citation" in card.text and "2205.14540" in card.text


def test_trained_cards_keep_what_users_read():
    text = pretraining()
    for part in ("| classification_accuracy | 0.75 |", "- effective batch: 8", "with labels (SupMAE)"):
        assert part in text, part
    assert "Command: `python run_pretraining.py --dataset_name uoft-cs/cifar10`" in text
    assert "![original, masked, reconstruction, visible pasted back](reconstructions.png)" in text
    assert 'pipeline("image-feature-extraction"' in text and "trust_remote_code=True" in text
    text = finetuned()
    assert "fine-tuned (MAE's recipe)" in text and "### validation" in text and "| top1 | 0.875 |" in text
    assert "2 classes (cat, dog)" in text and 'pipeline("image-classification"' in text
    text = segmented()
    assert "| mean_iou | 0.4321 |" in text and "runtime" not in text  # timings are no result
    assert "stages stage1, stage2" in text and "the encoder of someone/supmae-tiny" in text


def test_converted_cards_keep_their_provenance_and_reported_numbers():
    text = converted("converted-supmae-pretrain")
    for row in ("| 100 | 82.6 | 82.0 |", "| 400 | 83.6 | 83.0 |"):  # reported in the paper
        assert row in text
    assert "not measured here" in text and "## Conversion provenance" in text
    assert "`supmae_pretrain.pth`" in text and "0123456789abcdef0123456789abcdef" in text
    assert str(report()) in text and "supmae-convert --checkpoint supmae_pretrain.pth" in text
    assert "ViT, 2 layers, 32 wide" in text and 'model="someone/supmae-tiny"' in text
    assert "83.572" in converted("converted-supmae-finetuned")
    assert "Masked Autoencoders Are Scalable Vision Learners" in converted("converted-mae")


def test_converted_cards_declare_the_official_licence_and_datasets():
    for kind, datasets in (
        ("converted-supmae-pretrain", ["imagenet-1k"]),
        ("converted-supmae-finetuned", ["imagenet-1k"]),
        ("converted-mae", None),
    ):
        card = ModelCard(converted(kind))
        assert card.data.license == "cc-by-nc-4.0" and card.data.datasets == datasets, kind
        assert card.data.base_model is None, kind  # a local file is no Hub model


# ------------------------------------------------------------------------------------------------------ licences
@pytest.fixture
def official_converted(tmp_path):
    """A directory written by the converter from a (tiny, random) official SupMAE pretraining file."""
    config = tiny_config()
    path = tmp_path / "supmae_pretrain.pth"
    arguments = argparse.Namespace(model="mae_vit_base_patch16", norm_pix_loss=True, mask_ratio=0.75)
    torch.save({"model": official_state_dict(config, seed=5), "args": arguments}, path)
    output = tmp_path / "converted"
    convert.main(
        ["--checkpoint", str(path), "--output_dir", str(output), "--num_attention_heads", "4"]
        + ["--decoder_num_attention_heads", "2"]
    )
    return output


def test_licence_flows_from_a_converted_official_checkpoint(official_converted, tmp_path):
    assert ModelCard.load(official_converted / "README.md").data.license == "cc-by-nc-4.0"
    for build in (pretraining, finetuned, segmented):
        card = ModelCard(build(base_model=str(official_converted)))
        assert card.data.license == "cc-by-nc-4.0", build.__name__
        assert "`cc-by-nc-4.0`, the licence of the weights it started from (`converted`)" in card.text
    # ... and on through a model trained from that one, and from a checkpoint folder of such a run
    pretrained = write_card(tmp_path / "continued", pretraining(base_model=str(official_converted)))
    (pretrained / "checkpoint-4").mkdir()
    for source in (pretrained, pretrained / "checkpoint-4"):
        assert ModelCard(finetuned(base_model=str(source))).data.license == "cc-by-nc-4.0", source


def test_chosen_licence_does_not_replace_an_inherited_one(official_converted, caplog):
    with caplog.at_level(logging.WARNING, logger=model_card.__name__):
        card = ModelCard(finetuned(base_model=str(official_converted), license="mit"))
    assert card.data.license == "cc-by-nc-4.0"
    assert "--license mit is not used" in caplog.text and "cc-by-nc-4.0" in caplog.text


def test_licence_from_scratch_is_the_default_or_the_chosen_one():
    assert model_card.PROJECT_LICENSE == "apache-2.0"
    for build in (pretraining, segmented):
        card = ModelCard(build(base_model=None))
        assert card.data.license == "apache-2.0" and "default for weights trained here" in card.text
        card = ModelCard(build(base_model=None, license="mit"))
        assert card.data.license == "mit" and "(chosen with --license)" in card.text


def test_own_checkpoint_keeps_its_licence_and_one_without_a_licence_says_so(tmp_path):
    own = write_card(tmp_path / "own", pretraining(base_model=None, license="mit"))
    assert ModelCard(finetuned(base_model=str(own))).data.license == "mit"
    (tmp_path / "bare").mkdir()  # no card: saved by save_pretrained alone
    unlicensed = write_card(tmp_path / "unlicensed", "---\nlibrary_name: transformers\n---\n\n# A model\n")
    for source in (tmp_path / "bare", unlicensed):
        card = ModelCard(finetuned(base_model=str(source)))
        assert card.data.license == "other" and "declare no licence" in card.text, source
        assert ModelCard(finetuned(base_model=str(source), license="mit")).data.license == "mit", source


def test_licence_of_a_hub_model_comes_from_its_card(tmp_path, monkeypatch):
    import huggingface_hub

    assert ModelCard(finetuned(base_model="someone/supmae-tiny")).data.license == "other"  # unreachable: unknown
    write_card(tmp_path / "hub", "---\nlicense: cc-by-nc-4.0\n---\n\n# Hub model\n")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name: str(tmp_path / "hub" / name))
    assert ModelCard(finetuned(base_model="someone/supmae-tiny")).data.license == "cc-by-nc-4.0"


def test_license_option_takes_hub_identifiers_only(tmp_path):
    assert SupMAETrainingArguments(output_dir=str(tmp_path), license="cc-by-4.0").license == "cc-by-4.0"
    with pytest.raises(ValueError, match="--license 'Apache 2.0' is not a Hub licence identifier.*apache-2.0"):
        SupMAETrainingArguments(output_dir=str(tmp_path), license="Apache 2.0")


# --------------------------------------------------------------------------------------- Hub names, never paths
@pytest.mark.parametrize("build", [pretraining, finetuned, segmented])
def test_datasets_and_base_model_name_hub_repositories_only(build, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train").mkdir()
    (tmp_path / "weights").mkdir()
    local = [str(tmp_path / "train"), "train", "/data/train", "./data", "../data/train", "~/data", "a/b/c", "digits"]
    for dataset in local:
        text = build(dataset=dataset, base_model=str(tmp_path / "weights"))
        metadata = front_matter(text)
        assert "datasets" not in metadata and "base_model" not in metadata, dataset
        body = text.split("Command:")[0]  # the command is quoted as typed; nothing else names a local path
        assert str(tmp_path) not in body and "/data/train" not in body, dataset
    card = ModelCard(build(dataset="uoft-cs/cifar10", base_model="someone/supmae-tiny"))
    assert card.data.datasets == ["uoft-cs/cifar10"] and card.data.base_model == "someone/supmae-tiny"
    assert ModelCard(build(dataset="cifar10")).data.datasets == ["cifar10"]


def test_hub_id():
    assert model_card.hub_id("uoft-cs/cifar10") == "uoft-cs/cifar10" and model_card.hub_id("cifar10") == "cifar10"
    for name in (None, "", "digits", "/data/train", "data/train/images", "C:\\data", "bad name", "a//b"):
        assert model_card.hub_id(name) is None, name


# -------------------------------------------------------------------------------------------------- the renderer
def metadata() -> ModelCardData:
    return model_card.card_metadata("image-classification", ["supmae"], license="apache-2.0")


def fields(template: str) -> dict[str, str]:
    return {name: f"<{name}>" for name in model_card.placeholders(template)}


@pytest.mark.parametrize("template", model_card.TEMPLATES)
def test_missing_and_unknown_fields_are_named(template):
    given = fields(template)
    name = sorted(given)[0]
    del given[name]
    with pytest.raises(KeyError, match=f"missing field.*{name}"):
        model_card.render(template, metadata(), **given)
    with pytest.raises(KeyError, match="unknown field.*source_md6"):
        model_card.render(template, metadata(), **fields(template), source_md6="typo")


def test_values_are_strings_inserted_literally_once():
    given = fields("converted-mae")
    given["conversion_report"] = "kept: blocks.\\1.attn.qkv -> \\g<0> {{repo_id}}\nline two"
    text = model_card.render("converted-mae", metadata(), **given)
    assert given["conversion_report"] in text  # no back-references expanded, no second pass over inserted text
    with pytest.raises(TypeError, match="source_md5"):
        model_card.render("converted-mae", metadata(), **{**given, "source_md5": None})


def test_unknown_template():
    with pytest.raises(ValueError, match="converted-mae"):
        model_card.render("mae-converted", metadata())


@pytest.mark.slow
def test_fine_tuning_a_converted_official_checkpoint_writes_its_licence(official_converted, tmp_path):
    """End to end: supmae-convert, then run_classification from its directory; the card on disk keeps CC-BY-NC-4.0
    and names no local path in its metadata."""
    write_shapes_folder(tmp_path / "shapes", per_class=4)
    output = tmp_path / "finetuned"
    classification.main(
        ["--model_name_or_path", str(official_converted), "--train_dir", str(tmp_path / "shapes")]
        + ["--output_dir", str(output), "--max_steps", "2", "--per_device_train_batch_size", "4"]
        + ["--report_to", "none", "--disable_tqdm", "true", "--use_cpu", "true", "--save_strategy", "no"]
        + ["--license", "mit"]  # not used: the weights declare theirs
    )
    card = loaded((output / "README.md").read_text(), tmp_path)
    assert card.data.license == "cc-by-nc-4.0" and card.data.pipeline_tag == "image-classification"
    assert card.data.datasets is None and card.data.base_model is None
