"""Merging: streamed weighted sum and add-difference equal the NumPy arithmetic, tensor by tensor."""
import json

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from animatediff_jax.checkpoint import load_params, save_params
from convert.__main__ import main
from convert.io import CheckpointError
from convert.merge import add_difference_trees, merge_add_difference, merge_weighted, weighted_sum_trees


def _model(seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {"a.weight": rng.standard_normal((4, 6)).astype(dtype), "b.bias": rng.standard_normal(7).astype(dtype),
            "c.w": rng.standard_normal((2, 3, 3, 2)).astype(dtype), "ids": np.arange(5, dtype=np.int64) + seed}


@pytest.fixture
def files(tmp_path):
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"m{i}.safetensors"))
        save_file(_model(i), paths[-1])
    return paths


def test_weighted_sum_matches_numpy(tmp_path, files):
    w = [0.2, 0.5, 0.3]
    out = merge_weighted(files, w, str(tmp_path / "out.safetensors"), progress=False)
    got, models = load_file(out), [_model(i) for i in range(3)]
    for k in models[0]:
        if k == "ids":
            np.testing.assert_array_equal(got[k], models[0][k])  # integer buffers come from the first model
            continue
        want = sum(np.float32(wi) * m[k] for wi, m in zip(w, models))
        np.testing.assert_allclose(got[k], want, rtol=1e-6, atol=1e-6)
        assert got[k].dtype == np.float32


def test_add_difference_matches_numpy(tmp_path, files):
    out = merge_add_difference(*files, 0.7, str(tmp_path / "out.safetensors"), dtype="float16", progress=False)
    got = load_file(out)
    a, b, c = (_model(i) for i in range(3))
    for k in ("a.weight", "b.bias", "c.w"):
        assert got[k].dtype == np.float16
        np.testing.assert_array_equal(got[k], (a[k] + np.float32(0.7) * (b[k] - c[k])).astype(np.float16))


def test_flax_params_files_merge_keeping_metadata(tmp_path):
    from animatediff_jax.models.configs import VAEConfig
    trees = [{"enc": {"kernel": np.full((2, 2), float(i), np.float32)}} for i in range(2)]
    paths = [str(tmp_path / f"p{i}.safetensors") for i in range(2)]
    for t, p in zip(trees, paths):
        save_params(p, t, config=VAEConfig(), dtype="bfloat16")
    out = merge_weighted(paths, [0.25, 0.75], str(tmp_path / "m.safetensors"), progress=False)
    params, meta = load_params(out)
    assert meta["config_class"] == "VAEConfig" and "weighted_sum" in meta["merge"]
    assert params["enc"]["kernel"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(params["enc"]["kernel"].astype(np.float32), np.full((2, 2), 0.75))


def test_in_memory_trees():
    t = [{"x": {"k": np.float32(i) * np.ones(3, np.float32)}} for i in range(1, 4)]
    np.testing.assert_allclose(weighted_sum_trees(t, [0.5, 0.25, 0.25])["x"]["k"], np.full(3, 1.75))
    np.testing.assert_allclose(add_difference_trees(*t, 2.0)["x"]["k"], np.full(3, -1.0))


def test_mismatched_inputs_are_refused_by_name(tmp_path, files):
    odd = str(tmp_path / "odd.safetensors")
    m = _model(5)
    m["extra"] = np.zeros(1, np.float32)
    del m["b.bias"]
    save_file(m, odd)
    out = str(tmp_path / "out.safetensors")
    with pytest.raises(CheckpointError, match=r"odd.safetensors: keys differ.*'b.bias'.*'extra'"):
        merge_weighted([files[0], odd], [0.5, 0.5], out, progress=False)
    m = _model(6)
    m["a.weight"] = np.zeros((6, 4), np.float32)
    save_file(m, odd)
    with pytest.raises(CheckpointError, match=r"odd.safetensors: 1 shapes differ.*a.weight"):
        merge_add_difference(files[0], odd, files[1], 1.0, out, progress=False)
    with pytest.raises(ValueError, match="one weight each"):
        merge_weighted(files, [1.0], out, progress=False)
    assert not (tmp_path / "out.safetensors").exists()


def test_inspect_shows_what_a_merge_was_made_from(tmp_path, files, capsys):
    out = str(tmp_path / "out.safetensors")
    assert main(["merge", out, *files[:2], "--weights", "0.25", "0.75", "-q"]) == 0
    note = f"weighted_sum: 0.25*{files[0]}, 0.75*{files[1]}"
    capsys.readouterr()
    assert main(["inspect", "--json", out, files[0]]) == 0
    merged, plain = map(json.loads, capsys.readouterr().out.splitlines())
    assert merged["merge"] == note and "merge" not in plain
    assert main(["inspect", out]) == 0
    assert f"  merge        {note}\n" in capsys.readouterr().out


def test_weights_are_normalised_to_sum_to_one(tmp_path, files, capsys):
    """`--weights 0.5 0.3` wrote 0.5·A + 0.3·B (every tensor, norms and biases too, shrunk by 0.8) and
    `1 1` doubled every weight: a weighted merge is a convex combination, said in one stderr line."""
    a, b = _model(0), _model(1)
    for given, used in (([0.5, 0.3], [0.625, 0.375]), ([1, 1], [0.5, 0.5]), ([1e308, 1e308], [0.5, 0.5])):
        out = str(tmp_path / f"w{given[0]}.safetensors")
        assert main(["merge", out, *files[:2], "--weights", *map(str, given), "-q"]) == 0
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"note: --weights {given[0]:g} {given[1]:g} do not sum to 1"), err
        assert f"merging with {used[0]:g} {used[1]:g} (weights are normalised to sum to 1)" in err
        got = load_file(out)
        np.testing.assert_allclose(got["b.bias"], used[0] * a["b.bias"] + used[1] * b["b.bias"], rtol=1e-6)
        assert inspect_note(out) == f"weighted_sum: {used[0]}*{files[0]}, {used[1]}*{files[1]}"
    out = str(tmp_path / "one.safetensors")
    assert main(["merge", out, *files[:2], "--weights", "0.7", "0.3", "-q"]) == 0
    assert capsys.readouterr().err == ""  # already summing to 1 (within rounding): nothing to say
    for bad in (["-1", "2"], ["0", "0"], ["nan", "1"]):  # still refused
        assert main(["merge", str(tmp_path / "x.safetensors"), *files[:2], "--weights", *bad]) == 2


def test_in_memory_weighted_sum_is_normalised():
    a, b = {"w": np.ones(3, np.float32)}, {"w": np.full(3, 3, np.float32)}
    np.testing.assert_allclose(weighted_sum_trees([a, b], [2, 2])["w"], 2.0)


def inspect_note(path):
    from safetensors import safe_open
    with safe_open(path, "np") as f:
        return f.metadata()["merge"]


# ----------------------------------------------------------------------------- SD single files' buffers

POS_IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids"
EMA_BOOKKEEPING = {"model_ema.decay": np.array(0.9999, np.float32), "model_ema.num_updates": np.array(7, np.int32)}


LDM_SHAPES = {"model.diffusion_model.out.2.weight": (4, 8, 3, 3), "model.diffusion_model.out.2.bias": (4,),
              "first_stage_model.decoder.conv_out.weight": (3, 8, 3, 3),
              "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": (16, 8)}


@pytest.fixture
def ldm_weights():
    """Two random sets of (a few) SD1.x single-file weights, by their LDM names."""
    rngs = [np.random.default_rng(seed) for seed in (0, 1)]
    return [{k: rng.standard_normal(s).astype(np.float32) for k, s in LDM_SHAPES.items()} for rng in rngs]


def _single_file(path, weights, **extra):
    from tests.convert.ldm_fixtures import save_single_file
    return save_single_file(str(path), {**weights, **extra})


def test_single_files_differing_only_in_buffers_merge(tmp_path, ldm_weights, capsys):
    """A pruned SD1.5 (no `model_ema.*` bookkeeping, no `position_ids`) and a DreamBooth file carrying
    both were refused ('keys differ'): buffers are carried from the first input that has each, said in
    one stderr line; the weights are merged as before."""
    pruned = _single_file(tmp_path / "pruned.safetensors", ldm_weights[0])
    full = _single_file(tmp_path / "dreambooth.ckpt", ldm_weights[1], **EMA_BOOKKEEPING,
                        **{POS_IDS: np.arange(16, dtype=np.int64)[None]})
    out = str(tmp_path / "out.safetensors")
    assert main(["merge", out, pruned, full, "-q"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("note: non-weight buffers not in every input are carried"), err
    assert f"from {full}: 'cond_stage_model.transformer.text_model.embeddings.position_ids', " \
           "'model_ema.decay', 'model_ema.num_updates'" in err
    got = load_file(out)
    assert set(got) == set(ldm_weights[0]) | set(EMA_BOOKKEEPING) | {POS_IDS}
    assert got[POS_IDS].dtype == np.int64 and got[POS_IDS].tolist() == [list(range(16))]
    assert got["model_ema.num_updates"].dtype == np.int32 and got["model_ema.num_updates"] == 7
    assert got["model_ema.decay"] == np.float32(0.9999)
    k = "model.diffusion_model.out.2.weight"
    np.testing.assert_allclose(got[k], 0.5 * ldm_weights[0][k] + 0.5 * ldm_weights[1][k], rtol=1e-6, atol=1e-7)


def test_buffers_in_every_input_are_carried_not_summed(tmp_path, ldm_weights, capsys):
    """Buffers all inputs hold come from the first, whatever their dtype (a float `position_ids` or
    schedule was weighted-summed: ids 0.7·i + 0.3·(i + 1) are not ids); no note is printed."""
    ids = np.arange(16, dtype=np.float32)[None]
    betas = np.linspace(1e-4, 2e-2, 10, dtype=np.float32)
    a = _single_file(tmp_path / "a.safetensors", ldm_weights[0], **{POS_IDS: ids, "betas": betas})
    b = _single_file(tmp_path / "b.safetensors", ldm_weights[1], **{POS_IDS: ids + 1, "betas": 2 * betas})
    out = str(tmp_path / "out.safetensors")
    assert main(["merge", out, a, b, "--weights", "0.7", "0.3", "-q"]) == 0
    assert capsys.readouterr().err == ""
    got = load_file(out)
    np.testing.assert_array_equal(got[POS_IDS], ids)
    np.testing.assert_array_equal(got["betas"], betas)


def test_single_files_differing_in_weights_are_still_refused(tmp_path, ldm_weights, capsys):
    weights = dict(ldm_weights[1])
    del weights["model.diffusion_model.out.2.bias"]
    a = _single_file(tmp_path / "a.safetensors", ldm_weights[0], **{POS_IDS: np.arange(16)[None]})
    b = _single_file(tmp_path / "b.safetensors", weights, **EMA_BOOKKEEPING)
    out = tmp_path / "out.safetensors"
    assert main(["merge", str(out), a, b, "-q"]) != 0
    assert ("b.safetensors: keys differ from " in (err := capsys.readouterr().err)
            and "1 missing ('model.diffusion_model.out.2.bias'), 0 unexpected" in err), err
    assert not out.exists()
