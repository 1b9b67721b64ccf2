# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""SupMAE (Supervised Masked Autoencoders) as a Hugging Face Transformers model.

Importing the package registers "supmae" with the Auto classes and pipelines.
"""

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
    AutoVideoProcessor,
)

from .configuration_supmae import SUPMAE_PRESETS, SupMAEConfig
from .image_processing_supmae import SupMAEImageProcessor
from .modeling_supmae import (
    SupMAEBackbone,
    SupMAEForImageClassification,
    SupMAEForPreTraining,
    SupMAEModel,
    SupMAEPreTrainedModel,
)


__version__ = "0.1.0"

AutoConfig.register("supmae", SupMAEConfig, exist_ok=True)
AutoModel.register(SupMAEConfig, SupMAEModel, exist_ok=True)
AutoModelForPreTraining.register(SupMAEConfig, SupMAEForPreTraining, exist_ok=True)
AutoModelForImageClassification.register(SupMAEConfig, SupMAEForImageClassification, exist_ok=True)
# `UperNetForSemanticSegmentation(UperNetConfig(backbone_config=SupMAEConfig(...)))` builds its backbone through this.
AutoBackbone.register(SupMAEConfig, SupMAEBackbone, exist_ok=True)
AutoImageProcessor.register(SupMAEConfig, image_processor_classes={"torchvision": SupMAEImageProcessor}, exist_ok=True)
# A saved image processor names its class and ships its file, so it loads as remote code too.
SupMAEImageProcessor.register_for_auto_class("AutoImageProcessor")
# Images only. Pipelines look for a video processor too, and would take the image processor's auto_map for remote
# code and ask "Do you wish to run the custom code?"; with this (empty) entry they know there is none, locally.
AutoVideoProcessor.register(SupMAEConfig, video_processor_classes={}, exist_ok=True)

__all__ = [
    "SUPMAE_PRESETS",
    "SupMAEBackbone",
    "SupMAEConfig",
    "SupMAEForImageClassification",
    "SupMAEForPreTraining",
    "SupMAEImageProcessor",
    "SupMAEModel",
    "SupMAEPreTrainedModel",
]
