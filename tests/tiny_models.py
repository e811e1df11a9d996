"""Tiny random models saved as real Hugging Face folders, so the real loading code runs offline."""

from __future__ import annotations

from pathlib import Path

SENTENCE_WORDS = (
    "the a an and or but not no very good great bad awful fine film movie story plot acting "
    "love hate boring fun dull moving best worst is was it this that of to in on with for"
)
WORDS = SENTENCE_WORDS.split()
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def save_tiny_bert(folder: Path, num_layers: int = 2) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = SPECIAL_TOKENS + WORDS + letters + [f"##{c}" for c in letters]
    tokenizer = BertTokenizer(vocab={token: index for index, token in enumerate(tokens)}, do_lower_case=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)  # the same "pretrained" weights in every run, so test outcomes are reproducible
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
