"""Every preset in configs/ against the rules the published checkpoints were converted by.

The rules are written down here as facts, with their sources, not derived from our own files:

- transformers' `src/transformers/models/git/convert_git_to_pytorch.py` (`get_git_config`, read at
  huggingface/transformers commit f4e6a99028404b6833880f42e6b86c07bd90697a): the vision tower is
  480 px for a name holding "base" and "vqa", 420 px for "large" and "vqa", 224 px otherwise; a
  "large" name gets the ViT-L/14 tower (patch 14, width 1024, MLP 4096, 24 layers, 16 heads) and
  every other name GitVisionConfig's defaults (ViT-B/16: patch 16, width 768, MLP 3072, 12 layers,
  12 heads); a name holding "vatex" or "msrvtt" has 6 temporal embeddings, others none; the text
  decoder is GitConfig's defaults for all of them (BERT-base: width 768, 6 layers, 12 heads, MLP
  3072, vocabulary 30522, 1024 positions). Its table of checkpoint URLs names the 17 models below.
- The original repository's per-model settings (microsoft/GenerativeImage2Text at faae4fb,
  `aux_data/models/<NAME>/parameter.yaml`) say the same for the vision side: `test_crop_size: 480`
  for GIT_BASE_VQAv2 and GIT_BASE_TEXTVQA, 420 for GIT_LARGE_VQAv2 and GIT_LARGE_TEXTVQA,
  `num_image_with_embedding: 6` for the VATEX and MSRVTT models, `image_encoder_type: CLIPViT_L_14`
  for every GIT_LARGE* (GIT_LARGE_R, _R_COCO, _R_TEXTCAPS included).
"""

from __future__ import annotations

import pytest

from git_scratch import GitConfig, preset_names

# The checkpoints convert_git_to_pytorch.py converts (its model_name_to_url), i.e. microsoft/<name>.
PUBLISHED = [
    "git-base", "git-base-coco", "git-base-textcaps", "git-base-vqav2", "git-base-textvqa", "git-base-vatex",
    "git-base-msrvtt-qa", "git-large", "git-large-coco", "git-large-textcaps", "git-large-vqav2",
    "git-large-textvqa", "git-large-vatex", "git-large-msrvtt-qa", "git-large-r", "git-large-r-coco",
    "git-large-r-textcaps",
]
BASE_TOWER = {"patch_size": 16, "d_model": 768, "d_ff": 3072, "n_layer": 12, "n_head": 12}
LARGE_TOWER = {"patch_size": 14, "d_model": 1024, "d_ff": 4096, "n_layer": 24, "n_head": 16}
DECODER = {"d_model": 768, "n_layer": 6, "n_head": 12, "d_ff": 3072, "vocab_size": 30522, "max_positions": 1024}


def image_size_rule(name: str) -> int:
    if "base" in name and "vqa" in name:
        return 480
    if "large" in name and "vqa" in name:
        return 420
    return 224


@pytest.mark.parametrize("name", PUBLISHED)
def test_preset_follows_the_conversion_rules(name: str) -> None:
    cfg = GitConfig.from_name(name)
    tower = LARGE_TOWER if "large" in name else BASE_TOWER
    assert {field: getattr(cfg.vision, field) for field in tower} == tower
    assert cfg.vision.image_size == image_size_rule(name)
    assert cfg.n_frames == (6 if "vatex" in name or "msrvtt" in name else None)
    assert {field: getattr(cfg, field) for field in DECODER} == DECODER


def test_the_rules_as_the_original_states_them() -> None:
    # The original's parameter.yaml values, by its model names, against the presets.
    crop = {"git-base-vqav2": 480, "git-base-textvqa": 480, "git-large-vqav2": 420, "git-large-textvqa": 420}
    for name, size in crop.items():
        assert GitConfig.from_name(name).vision.image_size == size
    for name in ("git-base-vatex", "git-base-msrvtt-qa", "git-large-vatex", "git-large-msrvtt-qa"):
        assert GitConfig.from_name(name).n_frames == 6
    for name in ("git-large-r", "git-large-r-coco", "git-large-r-textcaps"):
        assert GitConfig.from_name(name).vision.patch_size == 14


def test_every_published_checkpoint_has_a_preset_and_no_other_exists() -> None:
    assert sorted(set(preset_names()) - {"shapes-tiny"}) == sorted(PUBLISHED)
