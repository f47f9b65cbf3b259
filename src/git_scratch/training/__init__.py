"""Training and evaluation over the library.

    loop.py      the training loop over a TrainConfig: DDP, accumulation, checkpoints, exact resume
    evaluate.py  generate for a manifest, then caption and VQA metrics
"""
