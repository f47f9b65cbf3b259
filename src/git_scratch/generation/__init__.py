"""Decoding over the model: the image prefix once, then greedy, sampling or beam search.

    prefix.py     image keys/values computed once, the cache, prefill and one decoding step
    search.py     generate (greedy, sampling, beam search), answer, make_processor; SEMANTICS, whose rules
    outputs.py    GenerateOutput (return_dict_in_generate=True) and compute_transition_scores
    processors.py repetition penalty, n-gram ban, bad words: the logits processors
    constrain.py  classification by generation inside a trie of allowed answers
"""
