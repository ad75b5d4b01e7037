"""`python -m convert` faults found by a user: export commands writing NaN/Inf, `--alpha` ≤ 0, empty output
paths, `export-motion --version` ignored, misnamed files misdiagnosed, PyTorch's unsafe advice quoted,
and raw numpy RuntimeWarnings reaching the user."""
import os
import struct
import warnings

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from animatediff_jax.checkpoint import load_config, load_params, save_params
from animatediff_jax.params import flatten, unflatten
from animatediff_jax.training.lora import init_factors
from convert.__main__ import main

MINIATURE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "animatediff_jax", "assets", "miniature"))
MOTION = os.path.join(MINIATURE, "motion_module_B.safetensors")  # v2: has a mid block
UNET = os.path.join(MINIATURE, "base", "unet.safetensors")


@pytest.fixture(autouse=True)
def in_a_scratch_folder(tmp_path_factory, monkeypatch):
    """Each test runs in an empty folder of its own: an empty output path resolves to the current folder,
    and before the fix `export-unet PARAMS ""` swapped the whole current folder out for its output."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(autouse=True)
def numpy_warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield


def _error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def _copy(src: str, dst, edit) -> str:
    """`src` params saved to `dst` (float32) with `edit(flat params)` applied."""
    params, meta = load_params(src)
    flat = {p: np.asarray(v, np.float32).copy() for p, v in flatten(params).items()}
    edit(flat)
    save_params(str(dst), unflatten(flat), config=load_config(meta), metadata={"motion": meta.get("motion", "{}")})
    return str(dst)


def _poison(flat):
    key = sorted(flat)[0]
    flat[key].reshape(-1)[0] = np.nan


@pytest.fixture(scope="module")
def nan_motion(tmp_path_factory):
    return _copy(MOTION, tmp_path_factory.mktemp("mm") / "nan_mm.safetensors", _poison)


@pytest.fixture(scope="module")
def factors(tmp_path_factory):
    params, _ = load_params(MOTION)
    f = init_factors(params, "motion", rank=2, seed=0)
    for w in f.values():
        w["up"] = np.full(w["up"].shape, 0.5, np.float32)
    path = str(tmp_path_factory.mktemp("lora") / "factors.safetensors")
    save_params(path, {"lora": f})
    return path


# ----------------------------------------------------------------------------- 1: NaN/Inf in exports

@pytest.mark.parametrize("out", ["x.ckpt", "x.safetensors", "adapter"])
def test_export_motion_refuses_nonfinite(nan_motion, tmp_path, capsys, out):
    assert main(["export-motion", nan_motion, str(tmp_path / out)]) == 1
    line = _error(capsys)
    assert line.startswith(f"error: {nan_motion}: 1 tensor holds NaN/Inf") and "--allow-nonfinite" in line
    assert os.listdir(tmp_path) == []


def test_export_motion_allow_nonfinite_warns(nan_motion, tmp_path, capsys):
    assert main(["export-motion", nan_motion, str(tmp_path / "x.safetensors"), "--allow-nonfinite"]) == 0
    assert capsys.readouterr().err.startswith(f"warning: {nan_motion}: 1 tensor holds NaN/Inf")
    assert os.path.isfile(tmp_path / "x.safetensors")


def test_export_motion_float16_overflow_is_named(tmp_path, capsys):
    big = _copy(MOTION, tmp_path / "big.safetensors", lambda flat: flat[sorted(flat)[0]].__setitem__(..., 1e6))
    assert main(["export-motion", big, str(tmp_path / "x.ckpt"), "--dtype", "float16"]) == 1
    assert "1 tensor holds NaN/Inf" in _error(capsys)


@pytest.mark.parametrize("alpha", ["1e300", "1e40"])
def test_export_motion_lora_overflow_refused(factors, tmp_path, capsys, alpha):
    out = str(tmp_path / "out.ckpt")
    assert main(["export-motion-lora", factors, out, "--alpha", alpha]) == 1
    line = _error(capsys)
    assert line.startswith(f"error: {factors} at --alpha {float(alpha):g}: ") and "hold NaN/Inf" in line
    assert not os.path.exists(out)
    assert main(["export-motion-lora", factors, out, "--alpha", alpha, "--allow-nonfinite"]) == 0
    assert "warning: " in capsys.readouterr().err and os.path.isfile(out)


def test_export_unet_refuses_nonfinite(tmp_path, capsys):
    bad = _copy(UNET, tmp_path / "unet.safetensors", _poison)
    out = str(tmp_path / "exported")
    assert main(["export-unet", bad, out]) == 1
    assert _error(capsys).startswith(f"error: {bad}: 1 tensor holds NaN/Inf")
    assert sorted(os.listdir(tmp_path)) == ["unet.safetensors"]
    assert main(["export-unet", bad, out, "--allow-nonfinite"]) == 0
    assert capsys.readouterr().err.startswith("warning: ")


# ----------------------------------------------------------------------------- 2, 3: parse-time checks

@pytest.mark.parametrize("alpha, problem", [("0", "must be in (0, inf), got 0"), ("-4", "must be in (0, inf), got -4"),
                                            ("nan", "must be a finite number, got nan"),
                                            ("inf", "must be a finite number, got inf")])
def test_export_motion_lora_alpha_must_be_positive(factors, tmp_path, capsys, alpha, problem):
    """(0 writes a LoRA that does nothing, a negative alpha a negated update)"""
    assert main(["export-motion-lora", factors, str(tmp_path / "o.ckpt"), "--alpha", alpha]) == 2
    assert _error(capsys) == f"error: --alpha: {problem}"


@pytest.mark.parametrize("argv,name", [
    (["motion", MOTION, ""], "output"), (["export-motion", MOTION, ""], "output"),
    (["export-motion-lora", MOTION, ""], "output"), (["motion-lora", MOTION, "", "--lora", "x"], "output"),
    (["lora", UNET, "", "--lora", "x"], "output"), (["merge", "", UNET, UNET], "output"),
    (["base", UNET, ""], "out_dir"), (["export-unet", UNET, ""], "out_dir"), (["controlnet", UNET, ""], "output")])
def test_empty_output_path_refused_at_parse_time(capsys, argv, name):
    assert main(argv) == 2
    assert _error(capsys) == f"error: {name}: empty path"
    assert os.listdir(".") == []


# ----------------------------------------------------------------------------- 4: export-motion --version

def test_export_motion_version_must_fit_the_module(tmp_path, capsys):
    assert main(["export-motion", MOTION, str(tmp_path / "x.ckpt"), "--version", "v1"]) == 1
    assert _error(capsys).startswith(f"error: {MOTION}: given version v1")
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- 5, 6: reading files

def test_safetensors_named_ckpt(tmp_path, capsys):
    path = str(tmp_path / "mm.ckpt")
    with open(MOTION, "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    assert main(["motion", path, str(tmp_path / "o.safetensors")]) == 1
    assert _error(capsys) == f"error: {path}: this is a safetensors file named .ckpt; rename it to .safetensors"


@pytest.mark.parametrize("legacy", [False, True])
def test_pickle_named_safetensors(tmp_path, capsys, legacy):
    path = str(tmp_path / "mm.safetensors")
    torch.save({"a": torch.zeros(2)}, path, _use_new_zipfile_serialization=not legacy)
    assert main(["motion", path, str(tmp_path / "o.safetensors")]) == 1
    assert _error(capsys) == (f"error: {path}: this is a PyTorch checkpoint (zip/pickle) file named "
                              ".safetensors; rename it to .ckpt")


def test_header_length_with_pickle_byte_is_still_safetensors():
    """A real safetensors header may be 0x80 bytes long: its first byte is then the pickle's 0x80."""
    from animatediff_jax.safetensors_file import sniff
    header = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'.ljust(0x80)
    assert sniff(struct.pack("<Q", len(header)) + header) == "safetensors"


class _Payload:
    def __reduce__(self):
        return (print, ("ran",))


def test_refused_pickle_message_gives_no_unsafe_advice(tmp_path, capsys):
    path = str(tmp_path / "evil.ckpt")
    torch.save({"a": _Payload()}, path)
    assert main(["motion", path, str(tmp_path / "o.safetensors")]) == 1
    line = _error(capsys)
    assert "Unsupported global: GLOBAL print" in line
    assert "weights_only` set to `False`" not in line and "can still be loaded" not in line
    assert "add_safe_globals" not in line and "\x1b" not in line


# ----------------------------------------------------------------------------- 7: no raw RuntimeWarning

def test_fuse_overflow_gives_no_numpy_warning():
    from convert.lora import LoraWeights, fuse
    params = {"w": {"kernel": np.ones((4, 4), np.float32)}}
    lora = {("w", "kernel"): LoraWeights(np.ones((4, 1), np.float32), np.ones((1, 4), np.float32), 1.0)}
    fused = fuse(params, lora, 1e300)
    assert np.isinf(fused["w"]["kernel"]).all()


def test_merge_overflow_is_one_error_line(tmp_path, capsys):
    # (--weights 1e308 1e308 overflowed here; weights are normalised now, so a sum cannot overflow)
    out = str(tmp_path / "m.safetensors")
    doubled = str(tmp_path / "doubled.safetensors")
    save_file({k: 2 * v for k, v in load_file(UNET).items()}, doubled)
    assert main(["merge", out, UNET, doubled, UNET, "--add-difference", "1e38", "-q"]) == 1  # A + 1e38·A
    assert "NaN/Inf" in _error(capsys)
    assert not os.path.exists(out)
