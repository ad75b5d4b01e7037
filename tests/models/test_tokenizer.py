"""PromptTokenizer vs transformers' CLIPTokenizer(padding="max_length", truncation=True), on a tiny
BPE vocabulary written in CLIP's format."""
import json
import warnings

import numpy as np
import pytest
from transformers import CLIPTokenizer

from animatediff_jax.tokenizer import PromptTokenizer

MERGES = ["c a", "ca t</w>", "d o", "do g</w>", "t h", "th e</w>", "r u", "ru n", "run s</w>"]
PROMPTS = ["", "the cat runs", "A  Dog, the CAT!", "cat " * 40, "dog " * 75, "the cat " * 60]


def _write_tokenizer(folder, with_config: bool):
    folder.mkdir(parents=True, exist_ok=True)
    letters = list("abcdefghijklmnopqrstuvwxyz,.!")
    vocab = {t: i for i, t in enumerate(letters + [c + "</w>" for c in letters] + [m.replace(" ", "") for m in MERGES]
                                        + ["<|startoftext|>", "<|endoftext|>"])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    if with_config:  # as SD1.x's tokenizer/tokenizer_config.json
        (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _write_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer", with_config=True)


def test_matches_clip_tokenizer_padding_and_truncation(folder):
    ours = PromptTokenizer.from_pretrained(str(folder))
    ref = CLIPTokenizer.from_pretrained(str(folder))(PROMPTS, padding="max_length", truncation=True,
                                                     max_length=77, return_tensors="np").input_ids
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids = ours(PROMPTS)
    assert ids.dtype == np.int32 and ids.shape == (len(PROMPTS), 77)
    np.testing.assert_array_equal(ids, ref)
    eos = ref[0, 1]  # "" -> bos, end-of-text, padding
    assert ids[-1, -1] == eos  # a truncated prompt keeps its end-of-text token


def test_overlong_prompt_warns_with_dropped_count(folder):
    tok = PromptTokenizer.from_pretrained(str(folder))
    # "the cat " * 60 = 120 word tokens + bos + eos = 122 -> 45 dropped.
    with pytest.warns(UserWarning, match=r"prompt 1 is 122 tokens long but CLIP takes 77: 45 tokens were dropped"):
        tok(["the cat", "the cat " * 60])


def test_prompt_at_the_limit_does_not_warn(folder):
    tok = PromptTokenizer.from_pretrained(str(folder))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ids = tok("dog " * 75)  # 75 words + bos + eos = 77
    assert ids.shape == (1, 77)


def test_diffusers_folder_and_default_length(tmp_path):
    model = tmp_path / "sd"
    _write_tokenizer(model / "tokenizer", with_config=False)  # no config: model_max_length unset
    tok = PromptTokenizer.from_pretrained(str(model))
    assert tok.max_length == 77 and tok("the cat").shape == (1, 77)
    assert PromptTokenizer.from_pretrained(str(model), subfolder="tokenizer").max_length == 77


def test_missing_files_named_in_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        PromptTokenizer.from_pretrained(str(tmp_path))
