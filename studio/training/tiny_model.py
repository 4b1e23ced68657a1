"""A tiny Llama-architecture causal LM with random weights, built locally for tests and demos.

No model hub is reachable where Mini Studio is developed and tested, so the registry's smallest model,
`mini-studio/tiny-llama`, is made on the spot: a byte-level BPE tokenizer trained on a small built-in
English corpus and a 2-layer Llama with random weights. The directory has the standard Hugging Face
layout (config.json, model.safetensors, generation_config.json, tokenizer.json, tokenizer_config.json
with the chat template, special_tokens_map.json), so `AutoModelForCausalLM`, `AutoTokenizer` and vLLM
load it like any other model.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any, cast

TINY_MODEL_NAME = "mini-studio/tiny-llama"
_INIT_LOCK = threading.Lock()

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|tool|>")
SPECIAL_TOKENS = (PAD, BOS, EOS, *ROLE_TOKENS)
VOCAB_SIZE = 1024
FINAL_NORM_GAIN = 8.0

# Each message is `<|role|><content><|eos|>`: the end of an assistant turn is the EOS token itself, so
# generation (here and in vLLM) stops at the end of the reply without a stop-string list. Content given
# as OpenAI text parts is joined; assistant tool calls are rendered as one JSON object per line.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- if tools -%}<|system|>Tools: {{ tools | tojson }}{{ eos_token }}{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant', 'tool'] -%}"
    "{{- raise_exception('unknown role: ' + message['role']) -}}"
    "{%- endif -%}"
    "<|{{ message['role'] }}|>"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- elif message['content'] -%}{%- for part in message['content'] -%}{{- part['text'] -}}{%- endfor -%}"
    "{%- endif -%}"
    "{%- for call in message.get('tool_calls') or [] -%}"
    "{%- if message['content'] or not loop.first -%}{{- '\\n' -}}{%- endif -%}"
    "{{- {'name': call['function']['name'], 'arguments': call['function']['arguments']} | tojson -}}"
    "{%- endfor -%}"
    "{{- eos_token -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)

_PARAGRAPHS = """\
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
Once upon a time there was a small village by the sea. The people of the village were fishermen and
farmers, and every morning they walked down to the harbor to see what the night had brought.
What is the capital of France? The capital of France is Paris. What is the capital of Japan? Tokyo.
Please answer the question in one short sentence. Thank you for your help! You are a helpful assistant.
The weather today is sunny with a light breeze, and tomorrow it will rain in the afternoon.
Water boils at one hundred degrees Celsius at sea level. The sun rises in the east and sets in the west.
Computers store numbers in binary. A function takes an input and returns an output. The program reads
a file, counts the words, and prints the result. Hello, world! How are you? I am fine, thank you.
She opened the window, looked at the garden, and smiled because the roses were finally in bloom.
Learning a new language takes time, patience and practice. Read a little every day and speak often.
The train leaves the station at seven o'clock and arrives in the city two hours later.
"""

_CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin",
    "Canada": "Ottawa", "Egypt": "Cairo", "Kenya": "Nairobi", "Peru": "Lima", "Chile": "Santiago",
    "Norway": "Oslo", "Sweden": "Stockholm", "Poland": "Warsaw", "Greece": "Athens", "India": "New Delhi",
    "China": "Beijing", "Brazil": "Brasilia", "Mexico": "Mexico City", "Russia": "Moscow", "Cuba": "Havana",
}  # fmt: skip
# One string split at import: a list literal of 46 words would be 46 lines once formatted.
_WORDS = str.split(
    "apple banana cherry river mountain forest ocean desert island valley city garden house window door "
    "table chair book letter music song story dream light shadow morning evening winter summer spring "
    "autumn red green blue yellow black white happy quiet bright small large fast slow warm cold"
)


def corpus() -> list[str]:
    """Return the built-in English corpus the tokenizer is trained on: fixed text plus generated lines."""
    lines = _PARAGRAPHS.splitlines()
    for country, capital in _CAPITALS.items():
        lines.append(f"What is the capital of {country}? The capital of {country} is {capital}.")
    for i, word in enumerate(_WORDS):
        other = _WORDS[(i * 7 + 3) % len(_WORDS)]
        lines.append(f"The {word} and the {other} are number {i}, {i * 13 % 100} and {i * 101}.")
        lines.append(f"Repeat after me: {word} {other} {word}. Spell {word}: {' '.join(word)}.")
    return lines


def _build_tokenizer() -> Any:
    """Return a `PreTrainedTokenizerFast` wrapping a byte-level BPE trained on `corpus()`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    # Byte level: any UTF-8 text is encodable (no unknown token) and decodes back exactly.
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _save_tokenizer(tokenizer: Any, path: Path) -> None:
    """Save the tokenizer so that both transformers 4.x and 5.x, and vLLM, load it with its template."""
    tokenizer.save_pretrained(str(path))
    # Newer transformers keep the template only in chat_template.jinja and write no special-token map;
    # older readers (and some serving stacks) look for both in the JSON files, so write them too.
    config_path = path / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["chat_template"] = CHAT_TEMPLATE
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("backend", None)
    # transformers 4.x reads `extra_special_tokens` as a name -> token dict; a plain list belongs under
    # the key every version understands.
    config.pop("extra_special_tokens", None)
    config["additional_special_tokens"] = list(ROLE_TOKENS)
    _write_json(config_path, config)
    (path / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    special = {
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "additional_special_tokens": list(ROLE_TOKENS),
    }
    _write_json(path / "special_tokens_map.json", special)


# The tiny model's sizes; head_dim 32: vLLM's CPU attention kernels take head sizes of 32 and up, not 16.
TINY_SIZES: dict[str, int] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 512,
}


def _build(path: Path, seed: int) -> None:
    """Write the tiny model (tokenizer, config, weights, generation config) into the empty `path`."""
    build_random_llama(path, TINY_SIZES, seed=seed, tie_word_embeddings=True)


def build_random_llama(
    path: Path,
    sizes: dict[str, int],
    *,
    seed: int = 0,
    tie_word_embeddings: bool = False,
    dtype: str = "float32",
) -> None:
    """Write a Llama with random weights and the sizes given (LlamaConfig fields) into `path`.

    The tokenizer is the tiny model's (trained on the spot); `vocab_size` in `sizes` may exceed it
    (the extra rows are never produced by the tokenizer but cost memory and compute like a real
    vocabulary), which is what benchmarks of realistic model shapes want. Weights are saved in
    `dtype` (a torch dtype name).
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer()
    tokenizer.model_max_length = sizes.get("max_position_embeddings", tokenizer.model_max_length)
    _save_tokenizer(tokenizer, path)
    fields: dict[str, Any] = {"vocab_size": len(tokenizer), **sizes}
    config = LlamaConfig(
        **fields,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # Seed the global generator only for the duration of the init, leaving the caller's RNG untouched;
    # the lock keeps two threads building at once from drawing from each other's seeded stream.
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Through Any: transformers' typing of the constructor differs between releases.
        model = cast(Any, LlamaForCausalLM)(config)
        # With the usual 0.02 init of tied embeddings the logits of a random model stay within about
        # +-1, so a frozen base with LoRA adapters could hardly push the loss below ln(vocab). A larger
        # gain on the final norm gives the logits room (a full fine-tune would learn it by itself).
        with torch.no_grad():
            model.model.norm.weight.fill_(FINAL_NORM_GAIN)
    model.to(getattr(torch, dtype))
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(str(path), safe_serialization=True)
    if not any(path.glob("model*.safetensors")):
        raise RuntimeError(f"saving the random model wrote no safetensors in {path}")


def is_tiny_model(path: Path) -> bool:
    """Return True when `path` holds a complete model (it is renamed into place only once complete)."""
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def ensure_tiny_model(path: Path, *, seed: int = 0) -> Path:
    """Create the tiny model under `path` unless it is already there; return `path`.

    Safe to call concurrently: each caller builds in its own temporary directory beside `path` and
    renames it into place; a caller that loses the race discards its copy. `seed` fixes the weights
    of a new model; an existing one is kept as it is, whatever seed built it.

    Raises:
        FileExistsError: `path` exists and is neither empty nor a complete model.
    """
    path = Path(path)
    if is_tiny_model(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        _build(tmp, seed)
        try:
            # rename() replaces an empty directory but fails on a non-empty one: exactly one caller wins.
            os.rename(tmp, path)
        except OSError:
            if not is_tiny_model(path):
                raise FileExistsError(f"{path} exists and is not a complete tiny model") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
