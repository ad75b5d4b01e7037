"""The one `.safetensors` reader refuses every malformed header (issue 13, kind 1) with one
`InputError` naming the file, through each entry point: `SafetensorsFile`, `convert.io.open_state_dict`
and `checkpoint.load_params`; a broken config in our own Flax files names the file too."""
import json

import numpy as np
import pytest

from animatediff_jax.checkpoint import load_config, load_params, read_metadata, save_params
from animatediff_jax.errors import InputError
from animatediff_jax.safetensors_file import SafetensorsFile
from convert.io import CheckpointError, open_state_dict
from tests.robustness.safetensors_files import join, split, tensors, write_valid


def _read_all(path):
    with SafetensorsFile(path) as f:
        return {k: (f.read(k), np.array(f.view(k))) for k in f.keys()}


def _mutations(header: dict) -> dict[str, dict | bytes]:
    a = header["a.weight"]
    return {
        "overlap": {**header, "a.weight": {**a, "data_offsets": [a["data_offsets"][0] + 4, a["data_offsets"][1] + 4]}},
        "negative offsets": {**header, "a.weight": {**a, "data_offsets": [-48, 0]}},
        "string offsets": {**header, "a.weight": {**a, "data_offsets": [str(o) for o in a["data_offsets"]]}},
        "float offsets": {**header, "a.weight": {**a, "data_offsets": [float(o) for o in a["data_offsets"]]}},
        "one offset": {**header, "a.weight": {**a, "data_offsets": a["data_offsets"][:1]}},
        "metadata list": {**header, "__metadata__": ["format", "pt"]},
        "metadata int value": {**header, "__metadata__": {"format": 1}},
        "negative shape": {**header, "a.weight": {**a, "shape": [-3, -4]}},
        "overflowing shape": {**header, "a.weight": {**a, "shape": [2**62, 2**62, 16]}},
        "bool shape": {**header, "a.weight": {**a, "shape": [True, 12]}},
        "wrong byte length": {**header, "a.weight": {**a, "shape": [3, 5]}},
        "unknown dtype": {**header, "a.weight": {**a, "dtype": "F17"}},
        "missing dtype": {**header, "a.weight": {k: v for k, v in a.items() if k != "dtype"}},
        "entry not an object": {**header, "a.weight": [1, 2, 3]},
        "top level list": json.dumps([header]).encode(),
        "deep nesting": b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "duplicate name": json.dumps(header)[:-1].encode() + b', "a.weight": ' + json.dumps(a).encode() + b"}",
        "NaN constant": json.dumps({**header, "x": {"dtype": "F32", "shape": [], "data_offsets": [0, 0]}})
        .replace("[]", "[NaN]").encode(),
        "not utf-8": b'{"\xff\xfe": 1}',
    }


@pytest.mark.parametrize("case", list(_mutations({"a.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})))
def test_malformed_header_is_one_input_error_naming_the_file(tmp_path, case):
    header, data = split(write_valid(str(tmp_path / "ok.safetensors")))
    path = join(str(tmp_path / "bad.safetensors"), _mutations(header)[case], data)
    for read in (_read_all, load_params, lambda p: open_state_dict(p).close(), read_metadata):
        with pytest.raises(InputError, match=r"bad\.safetensors: ") as e:
            read(path)
        assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        open_state_dict(path)


@pytest.mark.parametrize("case", ["overlap only", "gap", "trailing bytes", "truncated data", "huge header length",
                                  "header past the end", "tiny file"])
def test_bad_layout_is_refused(tmp_path, case):
    header, data = split(write_valid(str(tmp_path / "ok.safetensors")))
    path = str(tmp_path / "bad.safetensors")
    if case == "overlap only":  # every tensor after the first slides back 4 bytes, the buffer with them
        first = min(v["data_offsets"][0] for k, v in header.items() if k != "__metadata__" and v["data_offsets"][1] > 0)
        join(path, {k: ({**v, "data_offsets": [o - 4 for o in v["data_offsets"]]}
                        if k != "__metadata__" and v["data_offsets"][0] > first else v) for k, v in header.items()},
             data[:-4])
    elif case == "gap":
        join(path, {k: ({**v, "data_offsets": [v["data_offsets"][0] + 8, v["data_offsets"][1] + 8]}
                        if k != "__metadata__" else v) for k, v in header.items()}, b"\0" * 8 + data)
    elif case == "trailing bytes":
        join(path, header, data + b"\0" * 4)
    elif case == "truncated data":
        join(path, header, data[:-3])
    else:
        raw = open(join(path, header, data), "rb").read()
        raw = {"huge header length": (2**63).to_bytes(8, "little") + raw[8:],
               "header past the end": (len(raw)).to_bytes(8, "little") + raw[8:],
               "tiny file": raw[:5]}[case]
        open(path, "wb").write(raw)
    with pytest.raises(InputError, match=r"bad\.safetensors: "):
        _read_all(path)


def test_valid_file_reads_exactly_read_and_view(tmp_path):
    path = write_valid(str(tmp_path / "ok.safetensors"), {"format": "pt", "k": "v"})
    got = _read_all(path)
    with SafetensorsFile(path) as f:
        assert f.metadata == {"format": "pt", "k": "v"}
    for k, t in tensors().items():
        for a in got[k]:
            assert a.dtype == t.dtype and a.shape == t.shape
            np.testing.assert_array_equal(a.view(np.uint8), t.view(np.uint8))


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="nope.safetensors: cannot open"):
        SafetensorsFile(str(tmp_path / "nope.safetensors"))


def test_broken_config_in_flax_metadata_names_the_file(tmp_path):
    from animatediff_jax.models.configs import VAEConfig
    path = str(tmp_path / "vae.safetensors")
    save_params(path, {"conv": {"kernel": np.ones((2, 2), np.float32)}}, config=VAEConfig())
    header, data = split(path)
    for config, problem in [('{"block_out_channels": [32, ', "broken VAEConfig"),
                            ('"a string"', "broken VAEConfig"),
                            ("[1, 2]", "broken VAEConfig")]:
        join(path, {**header, "__metadata__": {**header["__metadata__"], "config": config}}, data)
        for read in (load_params, read_metadata):
            with pytest.raises(InputError, match=rf"vae\.safetensors: {problem}"):
                read(path)
    join(path, {**header, "__metadata__": {**header["__metadata__"], "config_class": "Nope"}}, data)
    with pytest.raises(InputError, match=r"vae\.safetensors: unknown config class 'Nope'"):
        load_params(path)
    with pytest.raises(InputError, match=r"x\.safetensors: unknown config class"):
        load_config({"config": "{}", "config_class": "Nope"}, "x.safetensors")


def test_no_other_safetensors_reader_in_the_project():
    """Issue 12/13: every `.safetensors` read goes through `animatediff_jax.safetensors_file`."""
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[2]
    readers = ("safe_open", "load_file", 'unpack("<Q"', "safetensors.numpy.load", "safetensors.torch.load")
    offenders = [f"{p.relative_to(root)}: {r}" for folder in ("animatediff_jax", "convert")
                 for p in sorted((root / folder).rglob("*.py")) if p.name != "safetensors_file.py"
                 for r in readers if r in p.read_text()]
    assert offenders == []
