"""A word-level CLIP BPE tokenizer (vocab.json + merges.txt) for a closed caption vocabulary.

transformers' `CLIPTokenizer` reads the files unchanged. Every word of the vocabulary becomes one
token: every contiguous piece of a word is in the vocab and every split of a piece into two adjacent
pieces has a merge, so whatever order BPE applies merges in, it ends at the whole word. Other text
still tokenizes (into pieces or single characters) instead of failing.
"""
from __future__ import annotations

import json
import os
import string
from typing import Iterable

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
_CHARS = string.ascii_lowercase + string.digits + ",.!?'-"


def build_vocab(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(token -> id, merges in rank order) making each of `words` a single token."""
    tokens: list[str] = []
    for c in _CHARS:
        tokens += [c, c + "</w>"]
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for word in dict.fromkeys(w.lower() for w in words):
        if not word or any(c not in _CHARS for c in word):
            raise ValueError(f"vocabulary word {word!r} must be non-empty and use only {_CHARS!r}")
        marked = list(word[:-1]) + [word[-1] + "</w>"]  # characters, end-of-word marked
        n = len(marked)
        for length in range(2, n + 1):
            for start in range(n - length + 1):
                for cut in range(start + 1, start + length):
                    pair = ("".join(marked[start:cut]), "".join(marked[cut:start + length]))
                    if pair not in seen:
                        seen.add(pair)
                        merges.append(pair)
                tokens.append("".join(marked[start:start + length]))
    tokens += [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    return vocab, merges


def write_word_tokenizer(folder: str, words: Iterable[str], max_length: int = 77) -> dict[str, int]:
    """Write vocab.json, merges.txt and tokenizer_config.json into `folder`; returns the vocab."""
    vocab, merges = build_vocab(words)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, indent=0)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    config = {"model_max_length": max_length, "bos_token": BOS, "eos_token": EOS, "pad_token": EOS,
              "unk_token": EOS, "do_lower_case": True, "tokenizer_class": "CLIPTokenizer"}
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    return vocab
