"""supmae-convert on damaged or wrong input: one paragraph `error:` naming the file and the problem, exit status 2,
and nothing written (issue 19, item 9: each of these was a traceback)."""

import argparse
import json
import shutil

import pytest
import torch
from helpers import official_state_dict, tiny_config

from supmae.cli import run_script
from supmae.interop.convert import main


HEADS = ["--num_attention_heads", "4", "--decoder_num_attention_heads", "2"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    state = official_state_dict(tiny_config())
    torch.save({"model": state, "args": argparse.Namespace(mask_ratio=0.75)}, root / "good.pth")
    data = (root / "good.pth").read_bytes()
    (root / "truncated.pth").write_bytes(data[: len(data) // 2])
    (root / "empty.pth").write_bytes(b"")
    (root / "text.pth").write_text("not a checkpoint")
    heads = {k: v for k, v in state.items() if k.startswith(("cls_head.", "projection_head."))}
    torch.save({"model": heads}, root / "head_only.pth")
    oblong = dict(state, pos_embed=torch.zeros(1, 1 + 12, state["pos_embed"].shape[-1]))
    torch.save({"model": oblong}, root / "oblong.pth")
    run_script(main, ["--checkpoint", str(root / "good.pth"), "--output_dir", str(root / "converted"), *HEADS])
    shutil.copytree(root / "converted", root / "truncated_dir")
    weights = root / "truncated_dir" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    shutil.copytree(root / "converted", root / "list_config")
    (root / "list_config" / "config.json").write_text(json.dumps([1, 2]))
    return root


@pytest.mark.parametrize(
    ("checkpoint", "extra", "message"),
    [
        ("truncated.pth", HEADS, "Cannot read {root}/truncated.pth: it is not a PyTorch checkpoint, or it is empty"),
        ("empty.pth", HEADS, "Cannot read {root}/empty.pth: it is not a PyTorch checkpoint"),
        ("text.pth", HEADS, "Cannot read {root}/text.pth: it is not a PyTorch checkpoint"),
        ("head_only.pth", HEADS, "holds no complete ViT encoder: supmae.embeddings.cls_token"),
        ("oblong.pth", HEADS, "has 12 patch rows, not a square grid"),
        ("truncated_dir", HEADS, "Cannot read {root}/truncated_dir/model.safetensors"),
        ("list_config", HEADS, "{root}/list_config/config.json holds a JSON list, not a model configuration"),
        (
            "good.pth",
            ["--num_attention_heads", "3", "--decoder_num_attention_heads", "2"],
            "divisible by `num_attention_",
        ),
        ("good.pth", [*HEADS, "--export_timm", "timm"], "--export_timm writes a fine-tuned classifier, but"),
    ],
)
def test_damaged_input_is_one_paragraph_and_writes_nothing(files, tmp_path, capsys, checkpoint, extra, message):
    output = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        run_script(main, ["--checkpoint", str(files / checkpoint), "--output_dir", str(output), *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message.format(root=files) in err[0], err
    assert not output.exists()


def test_args_recorded_as_a_dict_are_read_like_the_namespace(files, tmp_path, capsys):
    state = official_state_dict(tiny_config())
    torch.save({"model": state, "args": {"mask_ratio": 0.6, "norm_pix_loss": False}}, tmp_path / "dict_args.pth")
    run_script(main, ["--checkpoint", str(tmp_path / "dict_args.pth"), "--output_dir", str(tmp_path / "out"), *HEADS])
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["mask_ratio"], config["norm_pix_loss"]) == (0.6, False)
