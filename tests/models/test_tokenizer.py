"""PromptTokenizer vs transformers' CLIPTokenizer(padding="max_length", truncation=True), on a tiny
BPE vocabulary written in CLIP's format; the tokenizer cache (a later load without transformers)."""
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from transformers import CLIPTokenizer

from animatediff_jax.tokenizer import PromptTokenizer

MERGES = ["c a", "ca t</w>", "d o", "do g</w>", "t h", "th e</w>", "r u", "ru n", "run s</w>"]
PROMPTS = ["", "the cat runs", "A  Dog, the CAT!", "cat " * 40, "dog " * 75, "the cat " * 60,
           "Café déjà vu — 🐱", "tab\tand\nnew line", "  leading and trailing  ", "ＦＵＬＬwidth ﬁ ligature"]


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


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Each test its own (empty) cache root."""
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _write_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer", with_config=True)


def _reference(folder):
    return CLIPTokenizer.from_pretrained(str(folder))(PROMPTS, padding="max_length", truncation=True,
                                                      max_length=77, return_tensors="np").input_ids


def _ids(tok):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tok(PROMPTS)


def test_matches_clip_tokenizer_padding_and_truncation(folder):
    ref = _reference(folder)
    ids = _ids(PromptTokenizer.from_pretrained(str(folder)))
    assert ids.dtype == np.int32 and ids.shape == (len(PROMPTS), 77)
    np.testing.assert_array_equal(ids, ref)
    eos = ref[0, 1]  # "" -> bos, end-of-text, padding
    assert ids[-1, -1] == eos  # a truncated prompt keeps its end-of-text token


def test_overlong_prompt_warns_with_dropped_count(folder):
    tok = PromptTokenizer.from_pretrained(str(folder))
    # "the cat " * 60 = 120 word tokens + bos + eos = 122 -> 45 dropped.
    with pytest.warns(UserWarning) as caught:
        tok(["the cat", "a dog " * 37 + "a " + "the cat " * 22 + "x"])  # 74 + 1 kept of 120
    # the prompt named by its own text, the dropped part quoted from it (not as BPE tokens)
    assert [str(w.message) for w in caught] == [
        "prompt 'a dog a dog a dog a dog a dog a dog a do…' is 122 tokens long but CLIP takes 77: the last 45 were "
        "dropped ('the cat the cat the cat the cat the cat …')"]
    with pytest.warns(UserWarning, match=r"the last 11 were dropped \('été ☀️'\)"):
        tok("x " * 75 + "été ☀️")  # byte-level pieces of non-ASCII words: quoted whole from the prompt


def test_text_outside_the_vocabulary_is_named(folder):
    """A vocabulary without some bytes (not CLIP's, which holds them all) encodes them as the unknown
    token: said, and a prompt left with nothing else is said to encode like an empty one."""
    tok = PromptTokenizer.from_pretrained(str(folder))
    with pytest.warns(UserWarning) as caught:
        ids = tok(["the cat ☀ runs", "☀☀ ☀", "the cat runs"])
    assert [str(w.message) for w in caught] == [
        "prompt 'the cat ☀ runs': '☀' not in the tokenizer's vocabulary: encoded as the unknown token",
        "prompt '☀☀ ☀': the text the encoder reads ('☀☀', '☀') is not in the tokenizer's vocabulary: it encodes "
        "as unknown tokens only, like an empty prompt"]
    np.testing.assert_array_equal(ids, CLIPTokenizer.from_pretrained(str(folder))(
        ["the cat ☀ runs", "☀☀ ☀", "the cat runs"], padding="max_length", max_length=77, return_tensors="np").input_ids)


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


LOAD_FROM_CACHE = """
import json, sys, warnings
from animatediff_jax.tokenizer import PromptTokenizer
tok = PromptTokenizer.from_pretrained(sys.argv[1])
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    ids = tok(json.loads(sys.argv[2]))
print(json.dumps(dict(transformers="transformers" in sys.modules, ids=ids.tolist(), max_length=tok.max_length)))
"""


def test_a_later_load_reads_the_cache_without_transformers(folder, _cache):
    ref = _reference(folder)
    np.testing.assert_array_equal(_ids(PromptTokenizer.from_pretrained(str(folder))), ref)  # builds, writes
    assert len(os.listdir(_cache / "tokenizers")) == 1
    proc = subprocess.run([sys.executable, "-c", LOAD_FROM_CACHE, str(folder), json.dumps(PROMPTS)],
                          capture_output=True, text=True, env=dict(os.environ, ANIMATEDIFF_JAX_CACHE=str(_cache)))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["transformers"] is False  # the cached tokenizer needs the tokenizers library only
    np.testing.assert_array_equal(np.array(out["ids"]), ref)
    assert out["max_length"] == 77


def test_cache_is_keyed_by_the_folders_files(tmp_path, _cache):
    a = _write_tokenizer(tmp_path / "a", with_config=True)
    b = _write_tokenizer(tmp_path / "b", with_config=True)
    vocab = json.loads((b / "vocab.json").read_text())
    vocab["t"], vocab["h"] = vocab["h"], vocab["t"]  # same files but two ids swapped
    (b / "vocab.json").write_text(json.dumps(vocab))
    PromptTokenizer.from_pretrained(str(a))
    np.testing.assert_array_equal(_ids(PromptTokenizer.from_pretrained(str(b))), _reference(b))
    assert len(os.listdir(_cache / "tokenizers")) == 2


def test_damaged_or_unwritable_cache_costs_only_the_build(folder, _cache, tmp_path, monkeypatch):
    ref = _reference(folder)
    PromptTokenizer.from_pretrained(str(folder))
    (entry,) = (_cache / "tokenizers").iterdir()
    entry.write_text('{"settings": {"pad_token_id": 1}, "tokenizer": "{not json')
    np.testing.assert_array_equal(_ids(PromptTokenizer.from_pretrained(str(folder))), ref)
    assert "model" in json.loads(json.loads(entry.read_text())["tokenizer"])  # rebuilt and rewritten
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(blocked))  # the cache root is a file: unwritable
    np.testing.assert_array_equal(_ids(PromptTokenizer.from_pretrained(str(folder))), ref)
