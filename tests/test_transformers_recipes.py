"""Transformers' own fine-tuning recipes on a directory this project saves, as a Transformers user runs them: the
image-classification example script and the fine-tuning tutorial take their training and evaluation sizes from the
image processor's `size`, and load everything through the Auto classes with `trust_remote_code=True`, in a process
where the supmae package cannot be imported.

The two size rules are written here from what the recipes do (no code copied):
- the example script: `size["shortest_edge"]` if present, else `(size["height"], size["width"])`, for
  `RandomResizedCrop` in training and for `Resize` + `CenterCrop` in evaluation;
- the tutorial: `(size["height"], size["width"])` if present, else `shortest_edge` for the resize and a square crop
  of that side.
"""

import json
import textwrap

import pytest
import torch
from helpers import tiny_config, write_shapes_folder
from isolated import run_without_supmae
from torchvision import transforms as T
from transformers import AutoImageProcessor

from supmae import SupMAEForImageClassification, SupMAEForPreTraining, SupMAEImageProcessor
from supmae.data.transforms import eval_image_processor


def example_script_size(size: dict):
    """The image-classification example script: an int (shorter side / square crop) or (height, width)."""
    return size["shortest_edge"] if "shortest_edge" in size else (size["height"], size["width"])


def tutorial_sizes(size: dict):
    """The fine-tuning tutorial: (resize, crop); a shortest edge is the resize and the side of a square crop."""
    if "height" in size and "width" in size:
        return (size["height"], size["width"]), (size["height"], size["width"])
    return size["shortest_edge"], (size["shortest_edge"], size["shortest_edge"])


def recipe_transforms(processor, recipe: str):
    """(train, eval) torchvision transforms of one recipe, from the processor's `size`, mean and std."""
    size = dict(processor.size)
    normalize = T.Normalize(mean=processor.image_mean, std=processor.image_std)
    if recipe == "example":
        crop = resize = example_script_size(size)
    else:
        resize, crop = tutorial_sizes(size)
    train = T.Compose([T.RandomResizedCrop(crop), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    evaluation = T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor(), normalize])
    return train, evaluation


@pytest.mark.parametrize("recipe", ["example", "tutorial"])
@pytest.mark.parametrize("image_size", [32, 224])
def test_both_recipes_feed_the_model_its_own_size(recipe, image_size, tmp_path):
    """The tooling's processor (and an older directory's, read in the new form) give the model's input size."""
    old_style = SupMAEImageProcessor(
        size={"shortest_edge": round(image_size / 0.875)}, crop_size={"height": image_size, "width": image_size}
    )
    old_style.save_pretrained(tmp_path)
    for processor in (eval_image_processor(image_size), AutoImageProcessor.from_pretrained(str(tmp_path))):
        image = T.ToPILImage()(torch.rand(3, 300, 417))
        for transform in recipe_transforms(processor, recipe):
            assert tuple(transform(image).shape) == (3, image_size, image_size)
    # A rectangular model's processor: both recipes give (height, width).
    processor = SupMAEImageProcessor(size={"height": 32, "width": 64})
    image = T.ToPILImage()(torch.rand(3, 300, 417))
    for transform in recipe_transforms(processor, recipe):
        assert tuple(transform(image).shape) == (3, 32, 64)
    # The model takes what the recipes make.
    model = SupMAEForImageClassification(tiny_config(image_size=image_size)).eval()
    with torch.no_grad():
        pixel_values = recipe_transforms(eval_image_processor(image_size), recipe)[1](image)[None]
        assert model(pixel_values).logits.shape == (1, 5)


# Runs where `import supmae` fails (tests/isolated.py): argv = pretraining directory, image folder, output JSON.
RECIPES_WITHOUT_THE_PACKAGE = textwrap.dedent(
    """
    import json
    import os
    import sys

    import numpy as np
    import torch
    from PIL import Image
    from torchvision import transforms as T
    from transformers import (
        AutoConfig, AutoImageProcessor, AutoModelForImageClassification, Trainer, TrainingArguments,
    )

    pretrained, folder, output = sys.argv[1:4]
    classes = sorted(os.listdir(os.path.join(folder, "train")))
    id2label = dict(enumerate(classes))
    label2id = {name: index for index, name in id2label.items()}


    def example_script_size(size):
        return size["shortest_edge"] if "shortest_edge" in size else (size["height"], size["width"])


    def tutorial_sizes(size):
        if "height" in size and "width" in size:
            return (size["height"], size["width"]), (size["height"], size["width"])
        return size["shortest_edge"], (size["shortest_edge"], size["shortest_edge"])


    class Folder(torch.utils.data.Dataset):
        def __init__(self, split, transform):
            root = os.path.join(folder, split)
            self.items = [
                (os.path.join(root, name, file), label2id[name])
                for name in classes
                for file in sorted(os.listdir(os.path.join(root, name)))
            ]
            self.transform = transform

        def __len__(self):
            return len(self.items)

        def __getitem__(self, index):
            path, label = self.items[index]
            with Image.open(path) as image:
                return {"pixel_values": self.transform(image.convert("RGB")), "labels": label}


    def accuracy(prediction):
        return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}


    results = {}
    for recipe in ("example", "tutorial"):
        config = AutoConfig.from_pretrained(pretrained, trust_remote_code=True, num_labels=len(classes),
                                            id2label=id2label, label2id=label2id)
        processor = AutoImageProcessor.from_pretrained(pretrained, trust_remote_code=True)
        torch.manual_seed(0)
        model = AutoModelForImageClassification.from_pretrained(pretrained, config=config, trust_remote_code=True)
        size = dict(processor.size)
        if recipe == "example":
            crop = resize = example_script_size(size)
        else:
            resize, crop = tutorial_sizes(size)
        normalize = T.Normalize(mean=processor.image_mean, std=processor.image_std)
        train = T.Compose(
            [T.RandomResizedCrop(crop, scale=(0.5, 1.0)), T.RandomHorizontalFlip(), T.ToTensor(), normalize]
        )
        evaluation = T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor(), normalize])
        args = TrainingArguments(
            output_dir=os.path.join(os.path.dirname(output), recipe), per_device_train_batch_size=16,
            per_device_eval_batch_size=32, learning_rate=2e-3, weight_decay=0.05, max_steps=30, warmup_steps=3,
            logging_steps=10, save_strategy="no", report_to="none", use_cpu=True, seed=0,
            dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False,
        )
        trainer = Trainer(model=model, args=args, train_dataset=Folder("train", train),
                          eval_dataset=Folder("validation", evaluation), compute_metrics=accuracy)
        trainer.train()
        metrics = trainer.evaluate()
        results[recipe] = {
            "accuracy": metrics["eval_accuracy"],
            "crop": crop,
            "classes": sorted({type(model).__module__, type(processor).__module__, type(config).__module__}),
        }
    results["supmae_modules"] = sorted(name for name in sys.modules if name.split(".")[0] == "supmae")
    with open(output, "w") as file:
        json.dump(results, file)
    """
)


@pytest.mark.slow
def test_both_recipes_fine_tune_a_pretraining_directory_through_remote_code(tmp_path):
    torch.manual_seed(0)
    pretrained = tmp_path / "pretrained"
    SupMAEForPreTraining(tiny_config(num_labels=10)).save_pretrained(pretrained)
    eval_image_processor(32).save_pretrained(pretrained)  # what run_pretraining.py saves with the model
    write_shapes_folder(tmp_path / "shapes" / "train", per_class=32, size=40, seed=0)
    write_shapes_folder(tmp_path / "shapes" / "validation", per_class=16, size=40, seed=1)

    work = tmp_path / "elsewhere"  # not the repository: nothing there to import
    work.mkdir()
    arguments = [pretrained, tmp_path / "shapes", tmp_path / "results.json"]
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = run_without_supmae(RECIPES_WITHOUT_THE_PACKAGE, *arguments, cwd=work, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["supmae_modules"] == []
    for recipe in ("example", "tutorial"):
        assert results[recipe]["crop"] in (32, [32, 32]), results[recipe]
        assert all(module.startswith("transformers_modules.") for module in results[recipe]["classes"]), results
        # 3 classes (chance 1/3); colour tells the shapes apart, so a model that learns gets nearly all of them.
        assert results[recipe]["accuracy"] >= 0.85, results
