"""The architecture: what a researcher changes. Imports nothing from git_scratch but `config`.

    mask.py         the one attention mask, drawn in its docstring
    activations.py  the activations a config may name
    vision.py       open_clip's ViT, all tokens; video frames + temporal embedding
    decoder.py      text embeddings, attention, MLP, the post-LN block, KVCache
    git.py          vision -> projection -> [image ; text] -> blocks -> LM head; the loss
    outputs.py      GitOutput: every layer's hidden states and attentions, recorded around the forward

Every layer is called as `layer(x)`; kernel choices are applied from outside (git_scratch.accel).
"""
