"""Llama shapes (config.json sizes) the CUDA benchmark builds with random weights; the memory estimate's
unit test reads them with the peaks measured on them (`bench/results/`)."""

from __future__ import annotations

SHAPES: dict[str, dict[str, int]] = {
    "tinyllama-1.1b": {
        "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
        "num_key_value_heads": 4, "vocab_size": 32000, "max_position_embeddings": 2048,
    },
    "smoke": {  # a few MB: to try the script on a CPU (`--device cpu`)
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "vocab_size": 4096, "max_position_embeddings": 512,
    },
    "llama-3.2-3b": {
        "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24,
        "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 4096,
    },
}  # fmt: skip
