"""Transformers' own common tests on SupMAE: `ModelTesterMixin` and `ConfigTester` on SupMAEModel,
SupMAEForImageClassification, SupMAEBackbone and SupMAEForPreTraining, `BackboneTesterMixin` on SupMAEBackbone and
`ImageProcessingTestMixin` on SupMAEImageProcessor, as an in-library ViT-like model is tested.

The mixins come from the Transformers sdist of the installed version (see tests/transformers_mixins.py); without it
the module is skipped, saying where to put it. The testers below are this project's.
"""

import math
import unittest

import pytest
import transformers_mixins


_reason = transformers_mixins.unavailable_reason()
if _reason is not None:
    pytest.skip(_reason, allow_module_level=True)

import torch  # noqa: E402
from transformers.models.auto import modeling_auto  # noqa: E402
from transformers.testing_utils import torch_device  # noqa: E402

from supmae import (  # noqa: E402
    SupMAEBackbone,
    SupMAEConfig,
    SupMAEForImageClassification,
    SupMAEForPreTraining,
    SupMAEImageProcessor,
    SupMAEModel,
)


configuration_common = transformers_mixins.common_module("test_configuration_common")
modeling_common = transformers_mixins.common_module("test_modeling_common")
backbone_common = transformers_mixins.common_module("test_backbone_common")
image_processing_common = transformers_mixins.common_module("test_image_processing_common")

# Transformers' Auto name tables, which the mixins read to decide which classes get labels (image classification)
# and which is the base model. An in-library model is listed there; a registered one is not, so it is added while
# these tests run.
AUTO_NAMES = {
    "MODEL_MAPPING_NAMES": "SupMAEModel",
    "MODEL_FOR_PRETRAINING_MAPPING_NAMES": "SupMAEForPreTraining",
    "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES": "SupMAEForImageClassification",
    "MODEL_FOR_BACKBONE_MAPPING_NAMES": "SupMAEBackbone",
}


@pytest.fixture(autouse=True, scope="module")
def supmae_in_transformers_auto_tables():
    tables = [getattr(modeling_auto, name) for name in AUTO_NAMES]
    assert all(SupMAEConfig.model_type not in table for table in tables)
    for table, class_name in zip(tables, AUTO_NAMES.values(), strict=True):
        table[SupMAEConfig.model_type] = class_name
    yield
    for table in tables:
        del table[SupMAEConfig.model_type]


class SupMAEModelTester:
    """Tiny SupMAE configs and inputs: 32x32 images, 4x4 patches (L = 64), two 32-wide encoder blocks.

    `mask_ratio` is the pretraining mask: the encoder models see all L patches (plus the cls token); the pretraining
    model sees the K = int(L * (1 - mask_ratio)) visible ones, chosen from fixed `noise` so that its outputs are
    reproducible, and gets labels as it does in training (its supervised head is part of the loss)."""

    def __init__(
        self,
        parent,
        batch_size=13,
        image_size=32,
        patch_size=4,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        decoder_hidden_size=16,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=24,
        supervised_head_hidden_size=24,
        num_labels=3,
        is_training=True,
        pretraining=False,
        mask_ratio=0.75,
        out_features=None,
    ):
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.decoder_hidden_size = decoder_hidden_size
        self.decoder_num_hidden_layers = decoder_num_hidden_layers
        self.decoder_num_attention_heads = decoder_num_attention_heads
        self.decoder_intermediate_size = decoder_intermediate_size
        self.supervised_head_hidden_size = supervised_head_hidden_size
        self.num_labels = num_labels
        self.is_training = is_training
        self.pretraining = pretraining
        self.mask_ratio = mask_ratio
        self.out_features = out_features
        self.num_patches = (image_size // patch_size) ** 2
        visible = int(self.num_patches * (1 - mask_ratio)) if pretraining else self.num_patches
        self.seq_length = 1 + visible

    def get_config(self) -> SupMAEConfig:
        return SupMAEConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_channels=self.num_channels,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            decoder_hidden_size=self.decoder_hidden_size,
            decoder_num_hidden_layers=self.decoder_num_hidden_layers,
            decoder_num_attention_heads=self.decoder_num_attention_heads,
            decoder_intermediate_size=self.decoder_intermediate_size,
            supervised_head_hidden_size=self.supervised_head_hidden_size,
            num_labels=self.num_labels,
            mask_ratio=self.mask_ratio,
            out_features=self.out_features,
        )

    def prepare_config_and_inputs(self):
        generator = torch.Generator().manual_seed(0)
        pixel_values = torch.randn(
            self.batch_size, self.num_channels, self.image_size, self.image_size, generator=generator
        )
        labels = torch.randint(0, self.num_labels, (self.batch_size,), generator=generator)
        noise = torch.rand(self.batch_size, self.num_patches, generator=generator)
        return self.get_config(), pixel_values.to(torch_device), labels.to(torch_device), noise.to(torch_device)

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values, labels, noise = self.prepare_config_and_inputs()
        inputs = {"pixel_values": pixel_values}
        if self.pretraining:
            inputs.update(labels=labels, noise=noise)
        return config, inputs


class VisionModelTests:
    """What a vision model tests in place of the mixin's text-model versions, as Transformers' ViT tests do."""

    def test_model_get_set_embeddings(self):
        # The mixin's version asserts an `nn.Embedding` (a vocabulary); a ViT's input embedding is its patch embedding.
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            encoder = model.base_model
            self.assertIs(model.get_input_embeddings(), encoder.embeddings.patch_embeddings)
            replacement = torch.nn.Identity()
            model.set_input_embeddings(replacement)
            self.assertIs(model.get_input_embeddings(), replacement)
            self.assertIsNone(model.get_output_embeddings())


class SupMAEModelTest(VisionModelTests, modeling_common.ModelTesterMixin, unittest.TestCase):
    """The models that encode the whole image: the encoder, the classifier and the backbone."""

    all_model_classes = (SupMAEModel, SupMAEForImageClassification, SupMAEBackbone)
    test_resize_embeddings = False  # patch embeddings, no vocabulary (as ViT)

    def setUp(self):
        self.model_tester = SupMAEModelTester(self)
        self.config_tester = configuration_common.ConfigTester(
            self, config_class=SupMAEConfig, has_text_modality=False, hidden_size=32, num_attention_heads=4
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model_outputs_have_the_documented_shapes(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        batch, length, width = self.model_tester.batch_size, self.model_tester.seq_length, config.hidden_size
        with torch.no_grad():
            encoded = SupMAEModel(config).to(torch_device).eval()(**inputs)
            logits = SupMAEForImageClassification(config).to(torch_device).eval()(**inputs).logits
            maps = SupMAEBackbone(config).to(torch_device).eval()(**inputs).feature_maps
        grid = self.model_tester.image_size // self.model_tester.patch_size
        self.assertEqual(tuple(encoded.last_hidden_state.shape), (batch, length, width))
        self.assertEqual(tuple(logits.shape), (batch, config.num_labels))
        self.assertEqual([tuple(m.shape) for m in maps], [(batch, width, grid, grid)])


class SupMAEForPreTrainingTest(VisionModelTests, modeling_common.ModelTesterMixin, unittest.TestCase):
    """The pretraining model, which encodes the visible patches only (from fixed noise) and takes labels."""

    all_model_classes = (SupMAEForPreTraining,)
    test_resize_embeddings = False

    def setUp(self):
        self.model_tester = SupMAEModelTester(self, pretraining=True)

    def test_model_outputs_have_the_documented_shapes(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        with torch.no_grad():
            outputs = SupMAEForPreTraining(config).to(torch_device).eval()(**inputs)
        batch, patches = self.model_tester.batch_size, self.model_tester.num_patches
        pixels_per_patch = config.patch_size**2 * config.num_channels
        self.assertEqual(tuple(outputs.logits.shape), (batch, patches, pixels_per_patch))
        self.assertEqual(tuple(outputs.classification_logits.shape), (batch, config.num_labels))
        self.assertEqual(outputs.mask.sum().item(), batch * (patches - (self.model_tester.seq_length - 1)))
        self.assertTrue(math.isfinite(outputs.loss.item()) and outputs.classification_loss is not None)


class SupMAEBackboneTest(backbone_common.BackboneTesterMixin, unittest.TestCase):
    all_model_classes = (SupMAEBackbone,)
    config_class = SupMAEConfig
    has_attentions = True

    def setUp(self):
        self.model_tester = SupMAEModelTester(self, out_features=["stage1", "stage2"])


class SupMAEImageProcessingTester(image_processing_common.ImageProcessingTester):
    """Random images of 30..400 px through the processor's own defaults (MAE's 256 / 224) unless a test sets more."""

    def _get_image_processing_classes(self):
        # The mixin finds the classes from the test file's folder name (tests/models/<model_type>/ in Transformers).
        return {"torchvision": SupMAEImageProcessor}

    def expected_output_image_shape(self, images):
        # `size` is the crop (ConvNeXt's convention with crop_pct), whatever the image's shape.
        processor = SupMAEImageProcessor(**self.prepare_image_processor_dict())
        side = processor.size.shortest_edge
        return self.num_channels, side, side


class SupMAEImageProcessingTest(image_processing_common.ImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = SupMAEImageProcessingTester
