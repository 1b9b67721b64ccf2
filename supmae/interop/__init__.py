"""Other formats in and out: official and ViTMAE checkpoints (`convert`), timm (`timm_export`), and a SupMAE encoder
inside UperNet (`upernet`)."""
