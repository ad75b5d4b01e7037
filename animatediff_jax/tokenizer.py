"""Prompt tokenisation for the CLIP text encoder: transformers' `CLIPTokenizer`, padded to 77 tokens.

A prompt longer than the encoder's context is truncated (keeping the end-of-text token) with a
warning that says how many tokens were dropped and which text they held — never an error, as in
diffusers' pipelines.
"""
from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np

CLIP_CONTEXT_LENGTH = 77
_UNSET_MAX_LENGTH = 1_000_000  # transformers' "no limit" is ~1e30


class PromptTokenizer:
    """Callable: prompts -> int32 (N, max_length) token ids, padded with the tokenizer's pad token."""

    def __init__(self, tokenizer, max_length: int | None = None):
        """`tokenizer`: a transformers `CLIPTokenizer`. `max_length` defaults to the tokenizer's
        `model_max_length` when its config sets one, else 77 (CLIP's context)."""
        if max_length is None:
            declared = tokenizer.model_max_length
            max_length = declared if declared < _UNSET_MAX_LENGTH else CLIP_CONTEXT_LENGTH
        self.tokenizer = tokenizer
        self.max_length = int(max_length)

    @classmethod
    def from_pretrained(cls, name_or_path: str, subfolder: str | None = None,
                        max_length: int | None = None) -> "PromptTokenizer":
        """Load from a local folder (vocab.json + merges.txt, or tokenizer.json), a diffusers model
        folder (its `tokenizer/` is used), or a Hugging Face Hub id."""
        # transformers is imported here, not at module level: it takes ~0.5 s and only this constructor
        # needs it. We use its tokenizer alone, so its "PyTorch was not found" advice is noise to our
        # users: silence transformers' advisory warnings unless the user set the variable.
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        from transformers import CLIPTokenizer

        if os.path.isdir(name_or_path):
            given = os.path.join(name_or_path, subfolder) if subfolder else name_or_path
            folder = tokenizer_folder(given) if subfolder is None else given if _has_files(given) else None
            if folder is None:
                raise FileNotFoundError(
                    f"{given}: no CLIP tokenizer here (need vocab.json + merges.txt, or tokenizer.json)")
            return cls(CLIPTokenizer.from_pretrained(folder), max_length)
        kwargs = {"subfolder": subfolder} if subfolder else {}
        return cls(CLIPTokenizer.from_pretrained(name_or_path, **kwargs), max_length)

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    def __call__(self, prompts: str | Sequence[str]) -> np.ndarray:
        """One prompt or a list -> int32 (N, max_length): bos, tokens, end-of-text, padding."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not all(isinstance(p, str) for p in prompts):
            raise TypeError(f"prompts must be strings, got {[type(p).__name__ for p in prompts]}")
        full = self.tokenizer(prompts, truncation=False, verbose=False).input_ids
        for i, ids in enumerate(full):
            if len(ids) > self.max_length:
                dropped = ids[self.max_length - 1:-1]  # the kept sequence ends with end-of-text
                text = self.tokenizer.decode(dropped, skip_special_tokens=True)
                text = text if len(text) <= 60 else text[:60] + "…"
                warnings.warn(
                    f"prompt {i} is {len(ids)} tokens long but CLIP takes {self.max_length}: "
                    f"{len(dropped)} tokens were dropped ({text!r})", stacklevel=2)
        out = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.max_length,
                             return_tensors="np").input_ids
        return out.astype(np.int32)


def tokenizer_folder(path: str) -> str | None:
    """The folder holding a CLIP tokenizer (vocab.json + merges.txt, or tokenizer.json): `path` itself
    or its `tokenizer/` (an SD1.x diffusers or converted folder); None if neither (single files carry
    no tokenizer)."""
    for folder in (path, os.path.join(path, "tokenizer")):
        if os.path.isdir(folder) and _has_files(folder):
            return folder
    return None


def _has_files(folder: str) -> bool:
    has = lambda name: os.path.isfile(os.path.join(folder, name))  # noqa: E731
    return (has("vocab.json") and has("merges.txt")) or has("tokenizer.json")
