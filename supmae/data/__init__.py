"""Data for the training tasks: where images come from (`sources`), decoding and the bad-image policy (`images`),
the recipes' transforms, datasets and collators, GPU decoding, segmentation data, few-shot draws, class spaces, and
dataset preparation (`prepare`, `python -m supmae.prepare_dataset`)."""
