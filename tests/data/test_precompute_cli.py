"""`python -m animatediff_jax.data.precompute` on a diffusers SD folder, or on its converted folder
(`python -m convert base`, the form the shipped miniature base has): latents and embeddings equal
diffusers' AutoencoderKL and transformers' CLIPTextModel (PyTorch, float32) on the same clips; a folder
of several weight variants takes the --variant its error asks for."""
import json

import numpy as np
import pytest
import torch

from animatediff_jax.data import precompute
from animatediff_jax.data.pipeline import load_source
from animatediff_jax.data.procedural_tfds import ProceduralConfig, ProceduralVideos
from convert.base import convert_base
from tests.convert.ldm_fixtures import build, save_folder
from tests.utils import as_variants, rel_err


@pytest.mark.filterwarnings("ignore:prompt .* tokens long")  # captions > the tiny 16-token context
@pytest.mark.parametrize("converted", [False, True], ids=["diffusers", "converted"])
def test_precompute_cli_matches_the_pytorch_models(tmp_path, converted):
    videos = ProceduralVideos(config=ProceduralConfig(name="t", num_examples=3, frames=2, size=16),
                              data_dir=str(tmp_path / "tfds"))
    videos.download_and_prepare()
    unet, vae, text = build("small")
    folder = save_folder(str(tmp_path / "sd"), unet, vae, text)
    if converted:
        convert_base(folder, str(tmp_path / "sd_converted"), progress=False)
        folder = str(tmp_path / "sd_converted")
    tok = tmp_path / "tok"
    tok.mkdir()
    chars = list("abcdefghijklmnopqrstuvwxyz,")
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (tok / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (tok / "merges.txt").write_text("#version: 0.2\n")

    precompute.main(["--source", str(videos.data_dir), "--pretrained_model_path", folder, "--tokenizer_path",
                     str(tok), "--data_dir", str(tmp_path / "tfds"), "--name", "sd", "--batch_size", "2"])
    out = load_source(str(tmp_path / "tfds" / "precomputed_latents" / "sd" / "1.0.0"))
    source = load_source(str(videos.data_dir))
    assert len(out) == 3
    with torch.no_grad():
        for i in range(3):
            ex, clip = out[i], source[i]
            assert int(ex["source_index"]) == i and ex["caption"] == clip["caption"]
            x = torch.from_numpy(clip["video"].astype(np.float32) / 127.5 - 1).permute(0, 3, 1, 2)
            dist = vae.encode(x).latent_dist
            assert rel_err(ex["latent_mean"], dist.mean.permute(0, 2, 3, 1).numpy()) < 1e-4
            assert rel_err(ex["latent_logvar"], dist.logvar.permute(0, 2, 3, 1).numpy()) < 1e-4
            ids = torch.from_numpy(ex["input_ids"].astype(np.int64))[None]
            assert ids.shape == (1, 16)  # padded to the text encoder's context
            ref = text(ids).last_hidden_state[0].numpy()
            assert rel_err(ex["text_embedding"], ref) < 1e-4


def test_a_folder_of_several_variants_takes_the_variant_its_error_asks_for(tmp_path, capsys):
    folder = as_variants(save_folder(str(tmp_path / "sd"), *build("small")), "fp16", "bf16")
    videos = ProceduralVideos(config=ProceduralConfig(name="t", num_examples=1, frames=2, size=16),
                              data_dir=str(tmp_path / "videos"))
    videos.download_and_prepare()
    argv = ["--source", str(videos.data_dir), "--pretrained_model_path", str(folder), "--data_dir",
            str(tmp_path / "tfds"), "--name", "sd"]
    capsys.readouterr()
    assert precompute.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.rstrip().endswith(": no plain weights, only the variants bf16, fp16 of "
                                                          "diffusion_pytorch_model: choose one (--variant)"), err
    assert precompute.main([*argv, "--variant", "fp16"]) == 1  # the base read: on to its missing tokenizer
    assert capsys.readouterr().err.endswith(f"error: {folder}: no tokenizer found; pass --tokenizer_path\n")
