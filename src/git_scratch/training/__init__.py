"""Training and evaluation over the library.

    loop.py      the training loop over a TrainConfig: DDP, accumulation, checkpoints, exact resume
    resume.py    what a resumed run may change, the optimizer under new settings, Ctrl-C
    monitor.py   the tokenizer's coverage, held-out metrics during training, TensorBoard
    evaluate.py  generate for a manifest, then caption and VQA metrics
"""
