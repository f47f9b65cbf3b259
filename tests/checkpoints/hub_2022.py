"""The microsoft/git-* hub layout as it was converted in late 2022 (transformers ~4.26), built
literally from a tiny random transformers model.

That era wrote `pytorch_model.bin` (torch.save of the model's state dict) holding two persistent
int64 `position_ids` buffers, which transformers 5 no longer saves; a config.json with every
generic PretrainedConfig field, nested ones included; BERT's tokenizer files; and a
CLIPFeatureExtractor preprocessor_config.json. The hub's conversion bot later added a
`model.safetensors` made from the .bin, buffers and all. `write_2022_layout` writes any of the
three weight layouts a directory of that era can have.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

Weights = Literal["bin", "both", "safetensors"]
WEIGHTS: tuple[Weights, ...] = ("bin", "both", "safetensors")

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# PretrainedConfig.to_dict() of 4.26 wrote these defaults into every nested config.
GENERIC_FIELDS: dict[str, Any] = {
    "_name_or_path": "", "add_cross_attention": False, "architectures": None, "bad_words_ids": None,
    "begin_suppress_tokens": None, "bos_token_id": None, "chunk_size_feed_forward": 0,
    "cross_attention_hidden_size": None, "decoder_start_token_id": None, "diversity_penalty": 0.0,
    "do_sample": False, "early_stopping": False, "encoder_no_repeat_ngram_size": 0, "eos_token_id": None,
    "exponential_decay_length_penalty": None, "finetuning_task": None, "forced_bos_token_id": None,
    "forced_eos_token_id": None, "id2label": {"0": "LABEL_0", "1": "LABEL_1"}, "is_decoder": False,
    "is_encoder_decoder": False, "label2id": {"LABEL_0": 0, "LABEL_1": 1}, "length_penalty": 1.0,
    "max_length": 20, "min_length": 0, "no_repeat_ngram_size": 0, "num_beam_groups": 1, "num_beams": 1,
    "num_return_sequences": 1, "output_attentions": False, "output_hidden_states": False,
    "output_scores": False, "pad_token_id": None, "prefix": None, "problem_type": None, "pruned_heads": {},
    "remove_invalid_values": False, "repetition_penalty": 1.0, "return_dict": True,
    "return_dict_in_generate": False, "sep_token_id": None, "suppress_tokens": None,
    "task_specific_params": None, "temperature": 1.0, "tf_legacy_loss": False, "tie_encoder_decoder": False,
    "tie_word_embeddings": True, "tokenizer_class": None, "top_k": 50, "top_p": 1.0, "torch_dtype": None,
    "torchscript": False, "transformers_version": "4.26.0.dev0", "typical_p": 1.0, "use_bfloat16": False,
}

# The tiny model's 99 ids: BERT's specials first (so [CLS] = bos 1, [SEP] = eos 2), then words.
SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
WORDS = ["a", "an", "the", "cat", "dog", "on", "of", "in", "red", "blue", "small", "large", "sitting",
         "##s", "##ing", "photo", "man", "woman", "table", ".", ","]


def era_config(hf: Any) -> dict[str, Any]:
    """config.json as transformers 4.26 wrote it for this model's sizes."""
    c, v = hf.config, hf.config.vision_config
    vision = GENERIC_FIELDS | {
        "attention_dropout": 0.0, "dropout": 0.0, "hidden_act": v.hidden_act, "hidden_size": v.hidden_size,
        "image_size": v.image_size, "initializer_factor": 1.0, "initializer_range": v.initializer_range,
        "intermediate_size": v.intermediate_size, "layer_norm_eps": v.layer_norm_eps,
        "model_type": "git_vision_model", "num_attention_heads": v.num_attention_heads, "num_channels": 3,
        "num_hidden_layers": v.num_hidden_layers, "patch_size": v.patch_size, "projection_dim": 512,
    }
    return {
        "architectures": ["GitForCausalLM"], "attention_probs_dropout_prob": 0.1, "bos_token_id": c.bos_token_id,
        "classifier_dropout": None, "eos_token_id": c.eos_token_id, "hidden_act": c.hidden_act,
        "hidden_dropout_prob": 0.1, "hidden_size": c.hidden_size, "initializer_range": c.initializer_range,
        "intermediate_size": c.intermediate_size, "layer_norm_eps": c.layer_norm_eps,
        "max_position_embeddings": c.max_position_embeddings, "model_type": "git",
        "num_attention_heads": c.num_attention_heads, "num_hidden_layers": c.num_hidden_layers,
        "num_image_with_embedding": c.num_image_with_embedding, "pad_token_id": c.pad_token_id,
        "position_embedding_type": "absolute", "tie_word_embeddings": False, "torch_dtype": "float32",
        "transformers_version": "4.26.0.dev0", "use_cache": True, "vision_config": vision,
        "vocab_size": c.vocab_size,
    }


def era_state_dict(hf: Any) -> dict[str, torch.Tensor]:
    """The model's tensors plus the two int64 position_ids buffers 4.26 kept persistent."""
    c, v = hf.config, hf.config.vision_config
    n_patches = (v.image_size // v.patch_size) ** 2
    tensors = {k: t.detach().clone() for k, t in hf.state_dict().items()}
    tensors["git.embeddings.position_ids"] = torch.arange(c.max_position_embeddings).expand((1, -1))
    tensors["git.image_encoder.vision_model.embeddings.position_ids"] = torch.arange(n_patches + 1).expand((1, -1))
    return tensors


def era_preprocessor(image_size: int) -> dict[str, Any]:
    """microsoft/git-base's preprocessor_config.json of 2022, its 224 scaled to `image_size`."""
    return {"crop_size": image_size, "do_center_crop": True, "do_normalize": True, "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
            "resample": 3, "size": image_size}


def write_tokenizer(directory: Path, vocab_size: int) -> None:
    """bert-base-uncased's four files over a vocabulary of `vocab_size` entries."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    filler = [f"[unused{i}]" for i in range(vocab_size - len(SPECIALS) - len(WORDS))]
    vocab = SPECIALS + WORDS + filler
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    backend = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]",
                                         max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=None, lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    backend.decoder = decoders.WordPiece(prefix="##")
    backend.add_special_tokens(SPECIALS)
    backend.save(str(directory / "tokenizer.json"))
    specials = {"cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]",
                "unk_token": "[UNK]"}
    write_json(directory / "special_tokens_map.json", specials)
    write_json(directory / "tokenizer_config.json", specials | {
        "do_basic_tokenize": True, "do_lower_case": True, "model_max_length": 512,
        "name_or_path": "bert-base-uncased", "never_split": None, "processor_class": "GitProcessor",
        "special_tokens_map_file": None, "strip_accents": None, "tokenize_chinese_chars": True,
        "tokenizer_class": "BertTokenizer"})


def write_2022_layout(hf: Any, directory: Path, weights: Weights) -> Path:
    """`hf` saved as a hub directory of that era: .bin only, .bin and the bot's .safetensors, or
    the .safetensors alone (the .bin deleted later)."""
    directory.mkdir(parents=True)
    write_json(directory / "config.json", era_config(hf))
    write_json(directory / "preprocessor_config.json", era_preprocessor(hf.config.vision_config.image_size))
    write_tokenizer(directory, hf.config.vocab_size)
    tensors = era_state_dict(hf)
    if weights in ("bin", "both"):
        torch.save(tensors, directory / "pytorch_model.bin")
    if weights in ("both", "safetensors"):
        # safetensors' convert.py: the .bin reloaded, made contiguous, saved with format "pt".
        reloaded = torch.load(directory / "pytorch_model.bin", weights_only=True) if weights == "both" else tensors
        save_file({k: t.contiguous() for k, t in reloaded.items()}, directory / "model.safetensors",
                  metadata={"format": "pt"})
    return directory


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
