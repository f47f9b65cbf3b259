"""Evaluation as the papers report it: the datasets' own files in (COCO, Karpathy, VQAv2, TextVQA,
TextCaps, MSRVTT-QA readers in datasets.py), the official scores out (the COCO caption toolkit with
its PTB tokenizer, and the official VQA accuracy by answer type, in metrics.py), and the official
result files for the evaluation servers (results.py). It sits beside training/, which imports its
metrics, and below the command line."""
