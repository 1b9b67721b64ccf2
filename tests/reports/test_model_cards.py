"""The Hub model-card templates (supmae/reports/templates/, rendered by `supmae.reports.card_templates`): rendering and
metadata.

Fast and offline. `ModelCard.validate()` is deliberately not called: it sends the card to the Hub's validation
endpoint, which needs the network. Parsing the card (`ModelCard(text)`) checks the YAML front matter locally.
"""

import re
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from supmae.reports import card_templates as model_cards


FOLDER = Path(model_cards.__file__).parent / "templates"

COMMON = {
    "repo_id": "someone/supmae-vit-base-patch16",
    "base_model": "someone/supmae-vit-base-patch16-pretrain",
    "source_file": "supmae_pretrain_vit_base_400ep.pth",
    "source_md5": "0123456789abcdef0123456789abcdef",
    "conversion_command": "python -m supmae.convert supmae_pretrain_vit_base_400ep.pth out/ --push",
    "conversion_report": "used 162 keys; dropped 0 (optimizer, epoch, scaler, args ignored); newly initialized: none",
    "architecture": "ViT-B/16, 12 layers, 768 wide; decoder 1 block, 512 wide",
}
EXAMPLES = {
    "supmae-pretrain": COMMON,
    "supmae-finetuned": COMMON,
    "mae-converted": {**COMMON, "license": "cc-by-nc-4.0", "base_model": "facebook/vit-mae-base"},
}
EXPECTED = {  # template: (license, pipeline_tag, datasets)
    "supmae-pretrain": ("cc-by-nc-4.0", "image-feature-extraction", ["imagenet-1k"]),
    "supmae-finetuned": ("cc-by-nc-4.0", "image-classification", ["imagenet-1k"]),
    "mae-converted": ("cc-by-nc-4.0", "image-feature-extraction", None),
}


def front_matter(text: str) -> dict:
    match = re.match(r"---\n(.*?\n)---\n", text, re.DOTALL)
    assert match, "the card must start with YAML front matter"
    return yaml.safe_load(match.group(1))


def test_templates_are_the_markdown_files_of_the_folder():
    assert set(model_cards.TEMPLATES) == {path.stem for path in FOLDER.glob("*.md")}
    assert set(EXAMPLES) == set(model_cards.TEMPLATES)


def test_placeholders():
    common = {"repo_id", "base_model", "source_file", "source_md5", "conversion_command", "conversion_report"}
    common |= {"architecture"}
    assert model_cards.placeholders("supmae-pretrain") == common
    assert model_cards.placeholders("supmae-finetuned") == common
    assert model_cards.placeholders("mae-converted") == common | {"license"}


@pytest.mark.parametrize("template", model_cards.TEMPLATES)
def test_front_matter_placeholders_are_quoted(template):
    # The renderer escapes front-matter values for a YAML double-quoted string, so they must sit inside quotes.
    text = model_cards.template_text(template)
    head = re.match(r"---\n(.*?\n)---\n", text, re.DOTALL).group(1)
    for line in head.splitlines():
        for match in re.finditer(r"\{\{\w+\}\}", line):
            assert line[match.start() - 1] == '"' and line[match.end()] == '"', line


@pytest.mark.parametrize("template", model_cards.TEMPLATES)
def test_render_parses_as_a_model_card(template):
    text = model_cards.render(template, **EXAMPLES[template])
    assert "{{" not in text and "}}" not in text
    card = ModelCard(text)  # parses the metadata locally; card.validate() would need the network
    license, pipeline_tag, datasets = EXPECTED[template]
    assert card.data.license == license
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == pipeline_tag
    assert "supmae" in card.data.tags and "vit" in card.data.tags
    assert card.data.datasets == datasets
    assert card.data.base_model == EXAMPLES[template]["base_model"]
    assert card.text.lstrip().startswith("# ")  # the body follows the metadata


@pytest.mark.parametrize("template", model_cards.TEMPLATES)
def test_provenance_fields_are_in_the_body(template):
    fields = EXAMPLES[template]
    card = ModelCard(model_cards.render(template, **fields))
    for name in ("repo_id", "source_file", "source_md5", "conversion_command", "conversion_report", "architecture"):
        assert fields[name] in card.text, name
    assert "## Conversion provenance" in card.text
    assert "## Limitations" in card.text and "## Citation" in card.text
    assert "2205.14540" in card.text


def test_supmae_pretrain_content():
    text = model_cards.render("supmae-pretrain", **COMMON)
    assert "reported in the paper" in text and "not measured here" in text
    # fine-tuning top-1 by pretraining epochs, SupMAE then MAE
    for row in ("| 100 | 82.6 | 82.0 |", "| 200 | 83.1 | 82.4 |", "| 400 | 83.6 | 83.0 |", "| 1600 | – | 83.6 |"):
        assert row in text
    # robustness, with the direction of ImageNet-C's mCE
    assert re.search(r"ImageNet-C \| mCE \(%\), \*\*lower is better\*\* \| 48\.1 \| 51\.7 \|", text)
    for row in ("| 35.5 | 35.9 |", "| 51.0 | 48.3 |", "| 36.0 | 34.5 |"):
        assert row in text
    assert "49.0 mIoU" in text and "ELEVATER" in text
    # the pretraining recipe
    for value in ("400 (20 warmup)", "4096", "1.5e-4", "2.4e-3", "(0.9, 0.95)", "0.05", "0.75", "norm_pix_loss"):
        assert value in text, value
    assert "weight 0.01, temperature 10" in text and "scale 0.2–1" in text
    # usage
    assert 'pipeline("image-feature-extraction", model="someone/supmae-vit-base-patch16")' in text
    assert 'SupMAEForImageClassification.from_pretrained("someone/supmae-vit-base-patch16", num_labels=10)' in text
    assert "trust_remote_code=True" in text
    # limitations and citation
    assert "BatchNorm" in text and "CC-BY-NC-4.0" in text and "ImageNet's biases" in text
    assert "Liang, Feng and Li, Yangguang and Marculescu, Diana" in text


def test_supmae_finetuned_content():
    text = model_cards.render("supmae-finetuned", **COMMON)
    assert "83.572" in text and "96.574" in text and "not measured here" in text
    assert "83.6" in text and "48.1" in text
    for value in (
        "100 (5 warmup)",
        "1024",
        "base lr 1e-3",
        "0.65",
        "0.1",
        "0.8 / 1.0",
        "rand-m9-mstd0.5-inc1",
        "0.25",
    ):
        assert value in text, value
    assert "Resize 256 (bicubic) + CenterCrop 224" in text
    assert 'pipeline("image-classification", model="someone/supmae-vit-base-patch16")' in text


def test_mae_converted_content():
    text = model_cards.render("mae-converted", **EXAMPLES["mae-converted"])
    assert "newly initialized" in text
    assert "83.6" in text and "51.7" in text and "not measured here" in text
    assert "Masked Autoencoders Are Scalable Vision Learners" in text
    for license in ("apache-2.0", "mit"):  # a converted user checkpoint may carry another licence
        card = ModelCard(model_cards.render("mae-converted", **{**EXAMPLES["mae-converted"], "license": license}))
        assert card.data.license == license


@pytest.mark.parametrize("template", model_cards.TEMPLATES)
def test_missing_field_raises_key_error_naming_it(template):
    fields = dict(EXAMPLES[template])
    del fields["source_md5"]
    with pytest.raises(KeyError, match="missing field.*source_md5"):
        model_cards.render(template, **fields)


@pytest.mark.parametrize("template", model_cards.TEMPLATES)
def test_unknown_field_raises_key_error_naming_it(template):
    with pytest.raises(KeyError, match="unknown field.*source_md6"):
        model_cards.render(template, **EXAMPLES[template], source_md6="typo")


def test_missing_and_unknown_fields_are_both_named():
    fields = {**COMMON, "repo": "someone/x"}
    del fields["repo_id"]
    with pytest.raises(KeyError) as error:
        model_cards.render("supmae-pretrain", **fields)
    message = str(error.value)
    assert "missing field(s) repo_id" in message and "unknown field(s) repo" in message


def test_license_is_a_field_of_mae_converted_only():
    with pytest.raises(KeyError, match="unknown field.*license"):
        model_cards.render("supmae-pretrain", **COMMON, license="cc-by-nc-4.0")
    with pytest.raises(KeyError, match="missing field.*license"):
        model_cards.render("mae-converted", **COMMON)


@pytest.mark.parametrize("template", model_cards.TEMPLATES)
def test_empty_base_model_is_left_out_of_the_metadata(template):
    text = model_cards.render(template, **{**EXAMPLES[template], "base_model": ""})
    assert "base_model" not in front_matter(text)
    card = ModelCard(text)
    assert card.data.base_model is None
    assert card.data.library_name == "transformers"


def test_front_matter_values_are_escaped():
    tricky = 'user/model: "quoted" \\ back\nslash #not-a-comment'
    text = model_cards.render(
        "mae-converted", **{**EXAMPLES["mae-converted"], "base_model": tricky, "license": "a: b"}
    )
    metadata = front_matter(text)
    assert metadata["base_model"] == tricky and metadata["license"] == "a: b"
    assert ModelCard(text).data.base_model == tricky


def test_body_values_are_inserted_literally():
    report = "kept: blocks.\\1.attn.qkv -> \\g<0> {{repo_id}}\nline two"
    text = model_cards.render("supmae-pretrain", **{**COMMON, "conversion_report": report})
    assert report in text  # no regex back-references expanded, no second pass over inserted text


def test_values_must_be_strings():
    with pytest.raises(TypeError, match="source_md5"):
        model_cards.render("supmae-pretrain", **{**COMMON, "source_md5": None})


def test_unknown_template():
    with pytest.raises(ValueError, match="supmae-pretrain"):
        model_cards.render("supmae-pretrained", **COMMON)
