"""The tasks the run_*.py scripts run, one module each with its arguments and `main`: pretraining, classification
(with its evaluation sets and the robustness evaluation), few-shot transfer and semantic segmentation."""
