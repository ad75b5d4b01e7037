"""Prompt tokenisation for the CLIP text encoder: transformers' `CLIPTokenizer`, padded to 77 tokens.

transformers builds the tokenizer (a `tokenizers.Tokenizer`: normaliser, BPE, special tokens) from a
tokenizer folder; what it built is cached as one JSON file under `params.cache_root()/tokenizers`,
keyed by the folder's files and the transformers version, so a later run loads it with the
`tokenizers` library alone and never imports transformers (~1.4 s of every start-up).

A prompt longer than the encoder's context is truncated (keeping the end-of-text token) with a
warning that says how many tokens were dropped and which text they held — never an error, as in
diffusers' pipelines.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import warnings
from typing import Sequence

import numpy as np
import tokenizers

from animatediff_jax.errors import InputError
from animatediff_jax.text_files import read_text
from animatediff_jax.outputs import atomic_path
from animatediff_jax.params import cache_root

CLIP_CONTEXT_LENGTH = 77
_UNSET_MAX_LENGTH = 1_000_000  # transformers' "no limit" is ~1e30
# The files transformers reads from a tokenizer folder (what the cache key covers).
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json")


class PromptTokenizer:
    """Callable: prompts -> int32 (N, max_length) token ids, padded with the tokenizer's pad token."""

    def __init__(self, backend: tokenizers.Tokenizer, pad_token_id: int, eos_token_id: int,
                 max_length: int | None = None, declared_max_length: int | None = None):
        """`backend`: the `tokenizers.Tokenizer` transformers' `CLIPTokenizer` runs (it adds the
        start- and end-of-text tokens). `max_length` defaults to the tokenizer config's
        `model_max_length` (`declared_max_length`) when it sets one, else 77 (CLIP's context)."""
        if max_length is None:
            declared = declared_max_length or _UNSET_MAX_LENGTH
            max_length = declared if declared < _UNSET_MAX_LENGTH else CLIP_CONTEXT_LENGTH
        backend.no_truncation()
        backend.no_padding()
        self.backend = backend
        self.pad_token_id, self.eos_token_id = int(pad_token_id), int(eos_token_id)
        unk = getattr(backend.model, "unk_token", None)  # CLIP's is its end-of-text token
        self.unk_token_id = backend.token_to_id(unk) if unk else None
        self.max_length = int(max_length)

    @classmethod
    def from_pretrained(cls, name_or_path: str, subfolder: str | None = None,
                        max_length: int | None = None) -> "PromptTokenizer":
        """Load from a local folder (vocab.json + merges.txt, or tokenizer.json), a diffusers model
        folder (its `tokenizer/` is used), or a Hugging Face Hub id. A local folder is built by
        transformers once and then read from the cache (`cached_tokenizer`)."""
        if os.path.isdir(name_or_path):
            given = os.path.join(name_or_path, subfolder) if subfolder else name_or_path
            folder = tokenizer_folder(given) if subfolder is None else given if _has_files(given) else None
            if folder is None:
                raise FileNotFoundError(
                    f"{given}: no CLIP tokenizer here (need vocab.json + merges.txt, or tokenizer.json)")
            return cls(**cached_tokenizer(folder), max_length=max_length)
        kwargs = {"subfolder": subfolder} if subfolder else {}
        return cls(**_built_by_transformers(name_or_path, **kwargs), max_length=max_length)

    def __call__(self, prompts: str | Sequence[str]) -> np.ndarray:
        """One prompt or a list -> int32 (N, max_length): bos, tokens, end-of-text, padding."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not all(isinstance(p, str) for p in prompts):
            raise TypeError(f"prompts must be strings, got {[type(p).__name__ for p in prompts]}")
        out = np.full((len(prompts), self.max_length), self.pad_token_id, np.int32)
        for i, (prompt, encoding) in enumerate(zip(prompts, self.backend.encode_batch(prompts))):
            ids = encoding.ids
            if len(ids) > self.max_length:
                dropped = len(ids) - self.max_length  # the kept sequence ends with end-of-text
                # the prompt's own text from the first dropped token on (its character offset)
                warnings.warn(f"prompt {_short(prompt)} is {len(ids)} tokens long but CLIP takes {self.max_length}: "
                              f"the last {dropped} were dropped "
                              f"({_short(prompt[encoding.offsets[self.max_length - 1][0]:].strip())})", stacklevel=2)
                ids = ids[:self.max_length - 1] + [self.eos_token_id]
            self._warn_unknown(prompt, ids, encoding.offsets)
            out[i, :len(ids)] = ids
        return out


    def _warn_unknown(self, prompt: str, ids: list[int], offsets: list[tuple[int, int]]) -> None:
        """Warn when text of `prompt` the encoder sees (`ids` between start and end of text) is not in
        the vocabulary: it becomes the unknown token. CLIP's byte-level vocabulary holds every byte, so
        this happens only with other vocabularies (the miniature's holds its captions' words)."""
        if self.unk_token_id is None:
            return
        spans = sorted({offsets[j] for j in range(1, len(ids) - 1) if ids[j] == self.unk_token_id})
        if not spans:
            return
        parts: list[list[int]] = []  # the unknown characters' spans, touching ones joined
        for a, b in spans:
            if parts and a <= parts[-1][1]:
                parts[-1][1] = max(parts[-1][1], b)
            else:
                parts.append([a, b])
        unknown = ", ".join(_short(prompt[a:b]) for a, b in parts)
        if len(spans) == len({offsets[j] for j in range(1, len(ids) - 1)}):
            warnings.warn(f"prompt {_short(prompt)}: the text the encoder reads ({unknown}) is not in the tokenizer's "
                          "vocabulary: it encodes as unknown tokens only, like an empty prompt", stacklevel=3)
        else:
            warnings.warn(f"prompt {_short(prompt)}: {unknown} not in the tokenizer's vocabulary: encoded as "
                          "the unknown token", stacklevel=3)


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def cached_tokenizer(folder: str) -> dict:
    """`PromptTokenizer` arguments for the tokenizer in `folder`: read from the cache when transformers
    built this folder's files before (same transformers version), else built and cached (an
    unwritable or damaged cache only costs the build)."""
    digest = hashlib.sha256(importlib.metadata.version("transformers").encode())
    for name in TOKENIZER_FILES:
        file = os.path.join(folder, name)
        if os.path.isfile(file):
            with open(file, "rb") as f:
                digest.update(name.encode() + b"\0" + hashlib.sha256(f.read()).digest())
    path = os.path.join(cache_root(), "tokenizers", f"{digest.hexdigest()[:32]}.json")
    try:
        with open(path, encoding="utf-8") as f:
            entry = json.load(f)
        return dict(entry["settings"], backend=tokenizers.Tokenizer.from_str(entry["tokenizer"]))
    except Exception:  # missing, damaged or foreign (tokenizers raises a plain Exception on bad JSON)
        pass
    built = _built_by_transformers(folder)
    settings = {k: v for k, v in built.items() if k != "backend"}
    try:
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump({"settings": settings, "tokenizer": built["backend"].to_str()}, f)
    except OSError:
        pass
    return built


def _built_by_transformers(name_or_path: str, **kwargs) -> dict:
    """transformers' `CLIPTokenizer.from_pretrained` -> `PromptTokenizer` arguments."""
    # Imported here: transformers takes ~1.4 s to import and only a first load needs it. We use its
    # tokenizer alone, so its "PyTorch was not found" advice is noise to our users: silence
    # transformers' advisory warnings unless the user set the variable.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer.from_pretrained(name_or_path, **kwargs)
    declared = tok.model_max_length
    return dict(backend=tok.backend_tokenizer, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                declared_max_length=int(declared) if declared < _UNSET_MAX_LENGTH else None)


def tokenizer_folder(path: str) -> str | None:
    """The folder holding a CLIP tokenizer (vocab.json + merges.txt, or tokenizer.json): `path` itself
    or its `tokenizer/` (an SD1.x diffusers or converted folder); None if neither (single files carry
    no tokenizer)."""
    for folder in (path, os.path.join(path, "tokenizer")):
        if os.path.isdir(folder) and _has_files(folder):
            return folder
    return None


def check_tokenizer(path: str, name: str) -> str | None:
    """The CLIP tokenizer folder of `path` (the folder itself when it holds tokenizer files, else its
    `tokenizer/`), built now (and cached, `cached_tokenizer`) so that a damaged one is refused before any
    work; None when `path` holds none (a single file, a folder with neither). InputError
    `<name> <file>: <problem>` for one that lacks files or does not build."""
    own = os.path.isdir(path) and any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES)
    folder = path if own else os.path.join(path, "tokenizer")
    if not os.path.isdir(folder):
        return None
    if not _has_files(folder):
        raise InputError(f"{name} {folder}: an incomplete CLIP tokenizer: needs vocab.json + merges.txt, or "
                         f"tokenizer.json; it holds {', '.join(sorted(os.listdir(folder))) or 'nothing'}")
    for file in (os.path.join(folder, f) for f in TOKENIZER_FILES):
        if os.path.isfile(file):
            try:
                text = read_text(file)
                if file.endswith(".json"):
                    json.loads(text)
            except (OSError, ValueError) as e:
                raise InputError(f"{name} {file}: not a readable tokenizer file: {e}") from e
    try:
        cached_tokenizer(folder)
    except Exception as e:  # tokenizers raises a plain Exception on bad contents
        raise InputError(f"{name} {folder}: not a usable CLIP tokenizer: {str(e).partition(chr(10))[0] or type(e).__name__}") from e
    return folder


def _has_files(folder: str) -> bool:
    has = lambda name: os.path.isfile(os.path.join(folder, name))  # noqa: E731
    return (has("vocab.json") and has("merges.txt")) or has("tokenizer.json")
