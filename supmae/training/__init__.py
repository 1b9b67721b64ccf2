"""Training on Transformers' Trainer: the shared arguments, the base trainer and each task's trainer, the checkpoint
protocol, run records, optimizers and lr rules, multi-process checks, and files written whole."""
