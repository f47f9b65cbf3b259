"""The converter's errors: each names the file or key and says what to do, in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from git_scratch import GIT
from git_scratch.checkpoints.hub import KEY_MAP, config_from_hf, expanded_key_map, from_hf_state_dict, to_hf_state_dict
from tests.conftest import tiny_config


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    GIT.from_config(tiny_config()).save_pretrained(tmp_path / "ck")
    return tmp_path / "ck"


def edit_weights(directory: Path, edit) -> None:
    tensors = load_file(directory / "model.safetensors")
    edit(tensors)
    save_file(tensors, directory / "model.safetensors")


def load_error(directory: Path, kind: type[Exception] = ValueError) -> str:
    with pytest.raises(kind) as info:
        GIT.from_pretrained(directory)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_unexpected_and_wrong_shape_reported_together(checkpoint: Path) -> None:
    def edit(t):
        del t["git.encoder.layer.1.output.dense.bias"]
        t["git.extra.weight"] = torch.zeros(2)
        t["output.bias"] = torch.zeros(7)
    edit_weights(checkpoint, edit)
    message = load_error(checkpoint)
    assert "missing git.encoder.layer.1.output.dense.bias" in message
    assert "unexpected git.extra.weight" in message
    assert "output.bias has shape (7,)" in message and "(99,)" in message
    assert "model.safetensors" in message


@pytest.mark.parametrize("cut", [0, 5, 100, -10])
def test_truncated_or_corrupt_safetensors(checkpoint: Path, cut: int) -> None:
    path = checkpoint / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut >= 0 else data[:8] + b"{garbage" + data[16:cut])
    message = load_error(checkpoint)
    assert str(path) in message and "damaged or truncated" in message


def test_missing_config_and_weights(checkpoint: Path, tmp_path: Path) -> None:
    (checkpoint / "config.json").unlink()
    assert "config.json" in load_error(checkpoint, FileNotFoundError)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"model_type": "git"}))
    assert "no model.safetensors" in load_error(empty, FileNotFoundError)
    assert "no such checkpoint directory" in load_error(tmp_path / "nope", FileNotFoundError)


@pytest.mark.parametrize(("change", "needle"), [
    ({"hidden_act": "mish"}, "act = 'mish' is not supported"),
    ({"vision_config": {"hidden_act": "tanh"}}, "vision.act = 'tanh'"),
    ({"model_type": "bert"}, "model_type 'bert'"),
    ({"num_attention_heads": 5}, "not divisible by n_head = 5"),
    ({"num_hidden_layers": 0}, "n_layer = 0"),
    ({"hidden_size": -4}, "d_model = -4"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
    ({"eos_token_id": [2, 3]}, "eos_token_id"),
])
def test_bad_config_values(checkpoint: Path, change: dict, needle: str) -> None:
    path = checkpoint / "config.json"
    data = json.loads(path.read_text())
    if "vision_config" in change:
        data["vision_config"] |= change["vision_config"]
    else:
        data |= change
    path.write_text(json.dumps(data))
    message = load_error(checkpoint)
    assert needle in message and str(path) in message


@pytest.mark.parametrize("text", ["", "{not json", "[1, 2]"])
def test_config_not_json(checkpoint: Path, text: str) -> None:
    (checkpoint / "config.json").write_text(text)
    assert "config.json" in load_error(checkpoint)


def test_pytorch_bin_and_sharded_safetensors(checkpoint: Path, tmp_path: Path) -> None:
    reference = GIT.from_pretrained(checkpoint).state_dict()
    tensors = load_file(checkpoint / "model.safetensors")
    names = sorted(tensors)
    # pytorch_model.bin, read with weights_only=True
    as_bin = tmp_path / "bin"
    as_bin.mkdir()
    (as_bin / "config.json").write_text((checkpoint / "config.json").read_text())
    torch.save(tensors, as_bin / "pytorch_model.bin")
    # two shards and an index
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text((checkpoint / "config.json").read_text())
    halves = {"a.safetensors": names[: len(names) // 2], "b.safetensors": names[len(names) // 2:]}
    for shard, keys in halves.items():
        save_file({k: tensors[k] for k in keys}, sharded / shard)
    index = {"weight_map": {k: shard for shard, keys in halves.items() for k in keys}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    for directory in (as_bin, sharded):
        loaded = GIT.from_pretrained(directory).state_dict()
        assert all(torch.equal(loaded[k], reference[k]) for k in reference)


def mapped_ranges(path: Path) -> list[tuple[int, int]]:
    """Address ranges at which this process maps `path` (Linux)."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path.resolve())):
            start, end = line.split()[0].split("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the process's mappings (Linux)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_qkv_parts_are_read_outside_the_mapping(checkpoint: Path, dtype: torch.dtype) -> None:
    """The tensors the converter fuses are plain copies (their mapped pages would stay resident
    next to the fused tensor); all others stay mapped. Values are the file's either way."""
    from git_scratch.checkpoints.files import _read_file
    from git_scratch.checkpoints.hub import FUSED_PARTS

    path = checkpoint / "model.safetensors"
    edit_weights(checkpoint, lambda t: t.update({k: v.to(dtype) for k, v in t.items()}))
    expected = load_file(path)
    tensors = _read_file(path)
    ranges = mapped_ranges(path)
    assert ranges, "safetensors no longer maps the file; this test needs another way to tell"

    def mapped(t: torch.Tensor) -> bool:
        return any(start <= t.data_ptr() < end for start, end in ranges)

    parts = [name for name in tensors if FUSED_PARTS.fullmatch(name)]
    assert len(parts) == 6 * (tiny_config().n_layer + tiny_config().vision.n_layer)  # q, k, v; weight, bias
    assert not any(mapped(tensors[name]) for name in parts)
    assert all(mapped(t) for name, t in tensors.items() if name not in parts and t.numel())
    assert all(torch.equal(tensors[k], expected[k]) and tensors[k].dtype == dtype for k in expected)
    # One buffer for all of them, freed at once: freed one by one, they raised glibc's mmap threshold
    assert len({tensors[name].untyped_storage().data_ptr() for name in parts}) == 1


def test_parts_of_mixed_dtypes_share_one_buffer(tmp_path: Path) -> None:
    """Each part starts at a 64-byte boundary, so any dtype can view the shared buffer, even after
    a part whose size is not a multiple of the next one's element size."""
    from git_scratch.checkpoints.files import _read_unmapped

    torch.manual_seed(0)
    parts = {"a": torch.randn(3).to(torch.bfloat16), "b": torch.randn(5, 3), "c": torch.randn(2, 7).double()}
    save_file(parts, tmp_path / "mixed.safetensors")
    read = _read_unmapped(tmp_path / "mixed.safetensors", list(parts))
    assert all(torch.equal(read[k], v) and read[k].dtype == v.dtype for k, v in parts.items())


def test_a_file_cut_after_its_size_was_checked_is_one_line(checkpoint: Path, tmp_path: Path) -> None:
    """load_file checks the file's size first, so _read_unmapped meets a short file only when it
    changed in between; here it reads a cut copy directly."""
    from git_scratch.checkpoints.files import _read_unmapped
    from git_scratch.checkpoints.hub import FUSED_PARTS

    data = (checkpoint / "model.safetensors").read_bytes()
    header_size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_size])
    part = max((name for name in header if FUSED_PARTS.fullmatch(name)), key=lambda n: header[n]["data_offsets"][1])
    cut = tmp_path / "model.safetensors"
    cut.write_bytes(data[:8 + header_size + header[part]["data_offsets"][1] - 1])  # one byte short of its end
    with pytest.raises(ValueError, match=rf"model.safetensors ends inside {part}, so it changed while being read; "):
        _read_unmapped(cut, [part])


def test_bin_with_code_is_refused(checkpoint: Path) -> None:
    (checkpoint / "model.safetensors").unlink()
    torch.save({"x": torch.nn.Linear(2, 2)}, checkpoint / "pytorch_model.bin")  # a pickled module
    assert "pytorch_model.bin cannot be read" in load_error(checkpoint)


def test_legacy_temperal_name_loads(tmp_path: Path) -> None:
    GIT.from_config(tiny_config(n_frames=2)).save_pretrained(tmp_path / "ck")
    edit_weights(tmp_path / "ck", lambda t: [t.__setitem__(k.replace("temporal", "temperal"), t.pop(k))
                                             for k in [k for k in t if "temporal" in k]])
    assert GIT.from_pretrained(tmp_path / "ck").vision.frame_embed.shape == (2, 1, 32)


def test_save_refuses_to_overwrite(checkpoint: Path) -> None:
    model = GIT.from_pretrained(checkpoint)
    before = (checkpoint / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="--force"):
        model.save_pretrained(checkpoint)
    assert (checkpoint / "model.safetensors").read_bytes() == before
    with torch.no_grad():
        model.lm_head.bias.add_(1)
    model.save_pretrained(checkpoint, force=True)
    assert torch.equal(GIT.from_pretrained(checkpoint).lm_head.bias, model.lm_head.bias)
    assert [p.name for p in checkpoint.parent.iterdir()] == [checkpoint.name]  # no temp dirs left


def test_failed_save_leaves_the_old_checkpoint(checkpoint: Path, monkeypatch) -> None:
    import git_scratch.checkpoints.files as convert
    before = (checkpoint / "model.safetensors").read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(convert, "save_file", explode)
    with pytest.raises(OSError, match="disk full"):
        GIT.from_pretrained(checkpoint).save_pretrained(checkpoint, force=True)
    assert (checkpoint / "model.safetensors").read_bytes() == before
    assert [p.name for p in checkpoint.parent.iterdir()] == [checkpoint.name]


def test_key_map_covers_every_parameter_both_ways() -> None:
    for cfg in (tiny_config(), tiny_config(n_frames=3), tiny_config(tie_embeddings=True)):
        model = GIT.from_config(cfg)
        ours = {k for _, k in expanded_key_map(cfg)}
        expected = set(model.state_dict()) - ({"lm_head.weight"} if cfg.tie_embeddings else set())
        assert ours == expected
        sd = model.state_dict()
        back = from_hf_state_dict(to_hf_state_dict(sd, cfg), cfg)
        assert all(torch.equal(back[k], sd[k]) for k in back)
    assert len(KEY_MAP) == len({k for _, k in KEY_MAP})


def test_config_from_hf_defaults_match_git_base() -> None:
    from git_scratch import GitConfig
    assert config_from_hf({"model_type": "git", "vision_config": {}}) == GitConfig.from_name("git-base")
