"""Checkpoint files in and out.

    hub.py      the official (Hugging Face) layout's names <-> ours: config fields, the key table
    files.py    a checkpoint directory read and written (safetensors, sharded, .bin)
    variant.py  a changed model's directory: the builder that rebuilds it, its config, its weights
"""
