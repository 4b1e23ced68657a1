"""A tiny Llama-architecture causal LM, built and briefly pretrained locally for tests and demos.

No model hub is reachable where Mini Studio is developed and tested, so the registry's smallest model,
`mini-studio/tiny-llama`, is made on the spot: a byte-level BPE tokenizer trained on a small built-in
English corpus and a 2-layer Llama pretrained for a few hundred steps (about 15 s on one CPU core) on
that corpus, as plain text and as chat turns in its own template. It knows little, but what it says
is words: asked "What is the capital of France?" it answers "Paris is the capital of France." and
ends its turn with EOS, so a chat with the base shows an answer and a fine-tune visibly changes it.
The directory has the standard Hugging Face layout (config.json, model.safetensors,
generation_config.json, tokenizer.json, tokenizer_config.json with the chat template,
special_tokens_map.json), so `AutoModelForCausalLM`, `AutoTokenizer` and vLLM load it like any other
model.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, cast

TINY_MODEL_NAME = "mini-studio/tiny-llama"
_INIT_LOCK = threading.Lock()
_PRETRAIN_LOCK = threading.Lock()

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|tool|>")
SPECIAL_TOKENS = (PAD, BOS, EOS, *ROLE_TOKENS)
VOCAB_SIZE = 1024
FINAL_NORM_GAIN = 8.0
SYSTEM_PROMPT = "You are a helpful assistant."
# Pretraining: AdamW over random batches of the corpus lines and chat examples, warmup then cosine decay.
# 600 steps bring the loss to its floor (the arbitrary numbers of the generated lines stay unlearnt),
# all chat examples but a spelling or two answered word for word, in about 15 s on one core.
PRETRAIN_STEPS = 600
PRETRAIN_BATCH = 32
PRETRAIN_LEARNING_RATE = 3e-3
PRETRAIN_WARMUP_STEPS = 50

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


# Questions the corpus's own sentences answer, as a user and an assistant would say them.
_SMALL_TALK = (
    ("Hello!", "Hello, world! How are you?"),
    ("How are you?", "I am fine, thank you."),
    ("Thank you!", "Thank you for your help!"),
    ("Who are you?", "You are a helpful assistant."),
    ("Tell me a story.", "Once upon a time there was a small village by the sea."),
    ("Who lived in the village?", "The people of the village were fishermen and farmers."),
    ("What is the weather today?", "The weather today is sunny with a light breeze."),
    ("Will it rain tomorrow?", "Tomorrow it will rain in the afternoon."),
    ("When does water boil?", "Water boils at one hundred degrees Celsius at sea level."),
    ("Where does the sun rise?", "The sun rises in the east and sets in the west."),
    ("How do computers store numbers?", "Computers store numbers in binary."),
    ("What does a function do?", "A function takes an input and returns an output."),
    ("What does the program do?", "The program reads a file, counts the words, and prints the result."),
    ("How do I learn a new language?", "Read a little every day and speak often."),
    ("When does the train leave?", "The train leaves the station at seven o'clock."),
    ("Why did she smile?", "She smiled because the roses were finally in bloom."),
    ("Say something.", "A journey of a thousand miles begins with a single step."),
    ("What does the fox do?", "The quick brown fox jumps over the lazy dog."),
)


def chat_examples() -> list[tuple[str, str]]:
    """Return the (user question, assistant answer) pairs the tiny model is pretrained to answer.

    A capital is asked for in four ways, each answered as "Paris is the capital of France."; the
    corpus's "The capital of France is Paris." answers "Tell me about France." only. The quick start's
    and the tests' fine-tunes teach those questions other answers, so the change they make shows.
    """
    pairs = list(_SMALL_TALK)
    for country, capital in _CAPITALS.items():
        answer = f"{capital} is the capital of {country}."
        pairs.append((f"What is the capital of {country}?", answer))
        pairs.append((f"Capital of {country}?", answer))
        pairs.append((f"What's the capital of {country}?", answer))
        pairs.append((f"Which city is the capital of {country}?", answer))
        pairs.append((f"Tell me about {country}.", f"The capital of {country} is {capital}."))
    for i, word in enumerate(_WORDS):
        other = _WORDS[(i * 7 + 3) % len(_WORDS)]
        pairs.append((f"Repeat after me: {word} {other} {word}.", f"{word} {other} {word}."))
        pairs.append((f"Spell {word}.", f"{' '.join(word)}."))
    return pairs


def _build_tokenizer() -> Any:
    """Return a `PreTrainedTokenizerFast` wrapping a byte-level BPE trained on the corpus and chats."""
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
    bpe.train_from_iterator([*corpus(), *(text for pair in chat_examples() for text in pair)], trainer)
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
# Pretrained weights by seed, so that a process building the tiny model again (tests build it in many
# directories) pretrains once; the lock makes a second builder wait for the first one's weights.
_PRETRAINED: dict[int, dict[str, Any]] = {}


def _build(path: Path, seed: int) -> None:
    """Write the pretrained tiny model (tokenizer, config, weights, generation config) into `path`."""
    tokenizer = _write_tokenizer(path, TINY_SIZES["max_position_embeddings"])
    model = _llama(tokenizer, TINY_SIZES, seed=seed, tie_word_embeddings=True)
    with _PRETRAIN_LOCK:
        if seed not in _PRETRAINED:
            _pretrain(model, _pretraining_sequences(tokenizer), seed=seed)
            _PRETRAINED[seed] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(_PRETRAINED[seed])
    _save_model(model, tokenizer, path)


def _pretraining_sequences(tokenizer: Any) -> list[list[int]]:
    """Return the token ids of every corpus line (BOS text EOS) and every chat example in the template.

    Each chat example comes once without and once with the system prompt. An assistant turn ends with
    EOS and is never followed by a role token inside it, so generation stops at the end of an answer.
    """
    texts = [f"{BOS}{line}{EOS}" for line in corpus()]
    for question, answer in chat_examples():
        chat = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        for messages in (chat, [{"role": "system", "content": SYSTEM_PROMPT}, *chat]):
            texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]


def _pretrain(
    model: Any, sequences: list[list[int]], *, seed: int, steps: int = PRETRAIN_STEPS
) -> list[float]:
    """Train `model` in place on random batches of `sequences` (loss on every token); return the losses.

    Runs on one CPU thread: with matrices 64 wide a second thread gains little, and one thread gives
    the same weights bit for bit whatever the process's thread setting (a test, a Ray worker, a model
    server), so the model is the same wherever it is built. The batches are drawn from a generator
    seeded with `seed`; the global RNG is left untouched.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=PRETRAIN_LEARNING_RATE, betas=(0.9, 0.98), weight_decay=0.0
    )
    pad = model.config.pad_token_id
    losses: list[float] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model.train()
    try:
        for step in range(steps):
            picked = torch.randint(len(sequences), (PRETRAIN_BATCH,), generator=generator).tolist()
            rows = [sequences[i] for i in picked]
            ids = torch.full((len(rows), max(map(len, rows))), pad)
            mask = torch.zeros_like(ids)
            for r, row in enumerate(rows):
                ids[r, : len(row)] = torch.tensor(row)
                mask[r, : len(row)] = 1
            warmup = min(1.0, (step + 1) / PRETRAIN_WARMUP_STEPS)
            for group in optimizer.param_groups:
                group["lr"] = PRETRAIN_LEARNING_RATE * warmup * 0.5 * (1 + math.cos(math.pi * step / steps))
            loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
    finally:
        model.eval()
        torch.set_num_threads(threads)
    return losses


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

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _write_tokenizer(path, sizes.get("max_position_embeddings"))
    model = _llama(tokenizer, sizes, seed=seed, tie_word_embeddings=tie_word_embeddings)
    # With the usual 0.02 init of tied embeddings the logits of a random model stay within about
    # +-1, so a frozen base with LoRA adapters could hardly push the loss below ln(vocab). A larger
    # gain on the final norm gives the logits room (a full fine-tune would learn it by itself).
    with torch.no_grad():
        model.model.norm.weight.fill_(FINAL_NORM_GAIN)
    model.to(getattr(torch, dtype))
    _save_model(model, tokenizer, path)


def _write_tokenizer(path: Path, max_length: int | None) -> Any:
    """Build the tokenizer, save it into `path` and return it."""
    tokenizer = _build_tokenizer()
    if max_length is not None:
        tokenizer.model_max_length = max_length
    _save_tokenizer(tokenizer, path)
    return tokenizer


def _llama(tokenizer: Any, sizes: dict[str, int], *, seed: int, tie_word_embeddings: bool) -> Any:
    """Return a float32 `LlamaForCausalLM` for `tokenizer` of the sizes given, with weights from `seed`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

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
        return cast(Any, LlamaForCausalLM)(config)


def _save_model(model: Any, tokenizer: Any, path: Path) -> None:
    """Save `model` with a generation config that stops at the tokenizer's EOS into `path`."""
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(str(path), safe_serialization=True)
    if not any(path.glob("model*.safetensors")):
        raise RuntimeError(f"saving the model wrote no safetensors in {path}")


def is_tiny_model(path: Path) -> bool:
    """Return True when `path` holds a complete model (it is renamed into place only once complete)."""
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


@contextmanager
def _builders_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on `directory` (flock) while the body runs, across threads and processes.

    A Ray training job and a model server starting at once on one node would otherwise both spend the
    pretraining's CPU time; with the lock the second waits and finds the model built. The kernel drops
    the lock when its holder dies. Where the file system has no flock the body runs unlocked: the
    rename in `ensure_tiny_model` keeps concurrent builders correct without it.
    """
    import fcntl

    fd = os.open(directory, os.O_RDONLY)
    try:
        with suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def ensure_tiny_model(path: Path, *, seed: int = 0) -> Path:
    """Create the tiny model under `path` unless it is already there; return `path`.

    Building pretrains the model (see `PRETRAIN_STEPS`), so it takes some seconds; it is done once
    per directory and reused. Safe to call concurrently: builders wait for each other on a lock on
    the parent directory; each builds in its own temporary directory beside `path` and renames it into
    place, and a caller that loses the race (where locking is unavailable) discards its copy. `seed`
    fixes the weights of a new model; an existing one is kept as it is, whatever seed built it.

    Raises:
        FileExistsError: `path` exists and is neither empty nor a complete model.
    """
    path = Path(path)
    if is_tiny_model(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _builders_lock(path.parent):
        if is_tiny_model(path):  # built by the holder of the lock we waited for
            return path
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
