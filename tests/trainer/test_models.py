import json
import time

import pytest
import torch

from trainer.models import (
    PACKAGED_SMOLLM2,
    SOURCE_MARKER,
    build_tiny_model,
    convert_gguf,
    find_packaged_gguf,
    load_causal_lm,
    sha256_of_file,
)

TEXTS = ["Add 2 and 3.", "The answer is 5.", "你好，世界。", "def add(a, b): return a + b"] * 5


def test_tiny_model_builds_quickly():
    build_tiny_model(TEXTS, seed=0)  # the first call also imports transformers
    started = time.perf_counter()
    build_tiny_model(TEXTS, seed=0)
    assert time.perf_counter() - started < 2.0


def test_tiny_model_same_seed_same_weights():
    first, _ = build_tiny_model(TEXTS, seed=3)
    second, _ = build_tiny_model(TEXTS, seed=3)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name


def test_tiny_model_other_seed_other_weights():
    first, _ = build_tiny_model(TEXTS, seed=3)
    second, _ = build_tiny_model(TEXTS, seed=4)
    assert not torch.equal(first.model.embed_tokens.weight, second.model.embed_tokens.weight)


def test_tiny_model_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model(TEXTS, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_tiny_tokenizer_round_trips_unseen_chinese():
    _, tokenizer = build_tiny_model(TEXTS, seed=0)
    text = "机器学习很有趣 🙂"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_tiny_tokenizer_has_special_tokens_and_template():
    _, tokenizer = build_tiny_model(TEXTS, seed=0)
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|pad|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_tiny_model_respects_size_arguments():
    model, tokenizer = build_tiny_model(TEXTS, seed=0, vocab_size=300, hidden=32, layers=1)
    assert model.config.hidden_size == 32
    assert model.config.num_hidden_layers == 1
    assert len(tokenizer) <= 300
    assert model.config.vocab_size == len(tokenizer)


def test_tiny_model_rejects_empty_texts():
    with pytest.raises(ValueError, match="texts is empty"):
        build_tiny_model([], seed=0)


def test_find_packaged_gguf_locates_smollm2():
    path = find_packaged_gguf(PACKAGED_SMOLLM2)
    assert path.suffix == ".gguf"
    assert path.stat().st_size > 10_000_000


def test_find_packaged_gguf_lists_valid_names():
    with pytest.raises(ValueError, match="valid names"):
        find_packaged_gguf("packaged:gpt-5")


def test_load_causal_lm_reads_local_checkpoint(tmp_path):
    model, tokenizer = build_tiny_model(TEXTS, seed=0)
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    loaded, loaded_tokenizer = load_causal_lm(str(tmp_path / "tiny"))
    ids = torch.tensor([[1, 5, 9, 12]])
    assert torch.allclose(loaded(ids).logits, model(ids).logits)
    assert loaded_tokenizer.chat_template == tokenizer.chat_template
    assert loaded.training is False


def test_load_causal_lm_gguf_path_needs_cache_dir():
    with pytest.raises(ValueError, match="cache_dir is missing"):
        load_causal_lm(str(find_packaged_gguf()))


def test_convert_gguf_skips_conversion_when_marker_matches(tmp_path, monkeypatch):
    """A cache whose marker names the file's sha256 is returned without loading the GGUF file."""
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"not really a gguf file")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / SOURCE_MARKER).write_text(json.dumps({"sha256": sha256_of_file(gguf)}))
    assert convert_gguf(gguf, cache) == cache


def test_convert_gguf_converts_again_when_hash_differs(tmp_path):
    """A stale marker triggers a conversion, which fails here because the file is not a GGUF file."""
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"not really a gguf file")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / SOURCE_MARKER).write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(Exception):
        convert_gguf(gguf, cache)
    assert (cache / SOURCE_MARKER).is_file()
    assert not list(tmp_path.glob(".cache.tmp-*"))


@pytest.mark.slow
def test_smollm2_converts_once_then_loads_from_cache(tmp_path):
    """Convert the packaged SmolLM2 GGUF file, then load the safetensors cache and compare times."""
    cache = tmp_path / "smollm2"
    started = time.perf_counter()
    model, tokenizer = load_causal_lm(PACKAGED_SMOLLM2, cache)
    first_seconds = time.perf_counter() - started

    started = time.perf_counter()
    cached, _ = load_causal_lm(PACKAGED_SMOLLM2, cache)
    cached_seconds = time.perf_counter() - started
    print(f"SmolLM2 load: convert {first_seconds:.1f} s, from cache {cached_seconds:.1f} s")

    marker = json.loads((cache / SOURCE_MARKER).read_text())
    assert marker["sha256"] == sha256_of_file(find_packaged_gguf())
    assert (cache / "model.safetensors").is_file()
    assert cached_seconds < first_seconds
    assert not hasattr(cached.config, "quantization_config")
    assert sum(parameter.numel() for parameter in cached.parameters()) == pytest.approx(134.5e6, rel=0.01)

    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    encoded = tokenizer(ids, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        assert torch.allclose(cached(**encoded).logits, model(**encoded).logits)
        output = cached.generate(**encoded, max_new_tokens=8, do_sample=False)
    answer = tokenizer.decode(output[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer
