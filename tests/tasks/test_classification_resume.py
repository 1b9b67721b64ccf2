"""Fine-tuning resumed from a checkpoint ends with the weights of the uninterrupted run, bit for bit, with MAE's whole
augmentation on (RandAugment, random erasing, mixup / cutmix, drop path): every random draw of an item is a function
of (seed, epoch, index), and of a batch's mixing a function of its first item (issue 19, item 10)."""

import shutil

import pytest
import torch
from helpers import tiny_config, write_shapes_folder
from safetensors.torch import load_file

from supmae import SupMAEForPreTraining
from supmae.tasks import classification


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune-resume")
    write_shapes_folder(root / "train", per_class=4)
    SupMAEForPreTraining(tiny_config(num_labels=3)).save_pretrained(root / "pretrained")
    return root


@pytest.mark.parametrize("workers", [0, 1])
def test_a_resumed_fine_tuning_ends_with_the_uninterrupted_runs_weights(pretrained, tmp_path, workers):
    common = f"--model_name_or_path {pretrained / 'pretrained'} --train_dir {pretrained / 'train'} --mode finetune"
    common += " --per_device_train_batch_size 4 --max_steps 5 --save_steps 2 --eval_strategy no --report_to none"
    common += f" --use_cpu true --disable_tqdm true --seed 3 --dataloader_num_workers {workers} --train_val_split 0"
    common += " --base_learning_rate 0.05 --min_crop_scale 0.3"
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    classification.main([*common.split(), "--output_dir", str(whole)])
    # A run that stopped after its checkpoint of step 2 (epoch 0 of 12 images has 3 steps: it resumes mid-epoch).
    shutil.copytree(whole / "checkpoint-2", tmp_path / "checkpoint-2")
    classification.main(
        [*common.split(), "--output_dir", str(resumed), "--resume_from_checkpoint", str(tmp_path / "checkpoint-2")]
    )
    expected, actual = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected.keys() == actual.keys()
    different = [key for key in expected if not torch.equal(expected[key], actual[key])]
    assert not different, different[:5]
