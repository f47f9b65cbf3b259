"""Researcher tools over a built model.

    parity.py     stage-by-stage comparison with transformers' GitForCausalLM
    attention.py  text->image attention maps per layer, and rollout
    pictures.py   the mask and attention pictures
"""
