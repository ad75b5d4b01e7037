"""Training on pre-computed latents that were encoded for another run: latents of other frames, another
size or another VAE (latent channels, scaling factor) trained silently wrong or failed deep in the step;
they are refused in one line before any model loads. Latents that fit but were recorded from another
model (the same base may live at another path), or whose text embeddings are another text encoder's,
are one warning line."""
import json
import os
import shutil

import numpy as np
import pytest

from animatediff_jax import train
from animatediff_jax.data import precompute as precompute_cli
from animatediff_jax.data.precomputed_latents import precompute
from animatediff_jax.data.procedural_tfds import ProceduralConfig, ProceduralVideos
from animatediff_jax.errors import InputError
from animatediff_jax.training import trainer
from tests.training import tiny
from tests.utils import cache_repo

FITS = (4, 8, 8, 4)           # tiny.base_overrides: 4 frames of 16 px through write_base's 2-level VAE
TEXT = (tiny.TEXT_LENGTH, 64)  # write_base's text encoder: 32 tokens, width 64


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny.write_base(tmp_path_factory.mktemp("base") / "sd")


def latents(folder, name="lat", *, latent=FITS, text=TEXT, scaling=0.18215, model=""):
    """A pre-computed dataset of 4 examples of these shapes, as data.precompute writes one (its encoders
    stand-ins returning zeros); its directory."""
    clips = [{"video": np.zeros((1, 2, 2, 3), np.uint8), "caption": f"clip {i}"} for i in range(4)]
    encode_video = lambda video: (np.zeros((len(video),) + latent, np.float32),) * 2  # noqa: E731
    encode_text = lambda captions: (np.zeros((len(captions), text[0]), np.int32),  # noqa: E731
                                    np.zeros((len(captions),) + text, np.float32))
    return precompute(clips, encode_video, encode_text, str(folder / "tfds"), name, batch_size=2,
                      scaling_factor=scaling, model=model)


def run(workdir, overrides, dataset, **data):
    train_data = {"source": "tfds", "dataset_dir": dataset, "sample_size": 16, "sample_n_frames": 4, **data}
    return train.main(["--workdir", str(workdir), *overrides, f"train_data={json.dumps(train_data)}"])


def overrides(base):
    return tiny.base_overrides(base, train_batch_size=8)  # a row per (simulated) device


def said(recwarn, dataset):
    return [str(w.message) for w in recwarn if str(w.message).startswith(f"train_data.dataset_dir {dataset}:")]


@pytest.fixture
def no_models(monkeypatch):
    monkeypatch.setattr(trainer, "build_models", lambda *a, **k: pytest.fail("models built"))


@pytest.fixture
def models_reached(monkeypatch):
    """The run gets past the data checks to the model build, which stops it (nothing trained)."""
    def stop(*a, **k):
        raise InputError("models built")
    monkeypatch.setattr(trainer, "build_models", stop)


@pytest.mark.parametrize("latent, scaling, data, problem", [
    ((2, 8, 8, 4), 0.18215, {}, "latent_shape (2, 8, 8, 4) is clips of 2 frames; train_data.sample_n_frames is 4 "
                                "(pre-compute clips of 4 frames, or set train_data.sample_n_frames=2)"),
    ((4, 4, 4, 4), 0.18215, {}, "latent_shape (4, 4, 4, 4) is 4x4 latents, frames of 8x8 px through the VAE of "
                                "pretrained_model_path {base} (2x downsampling); train_data.sample_size is 16"),
    (FITS, 0.18215, {"sample_size": 32}, "latent_shape (4, 8, 8, 4) is 8x8 latents, frames of 16x16 px through the "
                                         "VAE of pretrained_model_path {base} (2x downsampling); train_data.sample_size"
                                         " is 32"),
    ((4, 8, 8, 16), 0.18215, {}, "latent_shape (4, 8, 8, 16) has 16 latent channels; the VAE of pretrained_model_path "
                                 "{base} has latent_channels 4 (the latents were encoded with another VAE)"),
    (FITS, 0.13025, {}, "scaling_factor 0.13025 (of the VAE it was encoded with, model other/sdxl); the VAE of "
                        "pretrained_model_path {base} has scaling_factor 0.18215 (pre-compute the dataset with this "
                        "base)"),
])
def test_latents_that_would_train_wrong_are_one_line_before_any_model_loads(base, tmp_path, capsys, no_models,
                                                                              latent, scaling, data, problem):
    dataset = latents(tmp_path, latent=latent, scaling=scaling, model="other/sdxl")
    capsys.readouterr()  # the dataset build's progress bars
    assert run(tmp_path / "w", overrides(base), dataset, **data) == 2
    out, err = capsys.readouterr()
    assert err == f"error: train_data.dataset_dir {dataset}: {problem.format(base=base)}\n", err
    assert "mesh" not in out and not (tmp_path / "w").exists()


def test_a_random_bases_vae_config_is_what_latents_are_checked_against(tmp_path, capsys, no_models):
    """Without pretrained_model_path the run's VAE is vae_config's (tiny's: 3 levels, 4 latent channels)."""
    overrides = tiny.overrides(tiny.write_tokenizer(tmp_path / "tok"), export_formats=["diffusers"])
    dataset = latents(tmp_path, latent=(4, 8, 8, 8), text=(tiny.TEXT_LENGTH, 32))
    capsys.readouterr()
    assert run(tmp_path / "w", overrides, dataset, sample_size=32) == 2
    assert capsys.readouterr().err == (f"error: train_data.dataset_dir {dataset}: latent_shape (4, 8, 8, 8) has 8 "
                                       "latent channels; the VAE of vae_config has latent_channels 4 (the latents "
                                       "were encoded with another VAE)\n")


def test_latents_of_another_model_path_that_fit_are_one_warning(base, tmp_path, capsys, recwarn, models_reached):
    elsewhere = str(tmp_path / "elsewhere" / "sd15")
    dataset = latents(tmp_path, model=elsewhere)
    capsys.readouterr()
    assert run(tmp_path / "w", overrides(base), dataset) == 1
    assert capsys.readouterr().err.endswith("error: models built\n")
    assert said(recwarn, dataset) == [
        f"train_data.dataset_dir {dataset}: pre-computed with model {elsewhere}, not pretrained_model_path {base}; "
        "its latents' shape and scaling_factor fit (the same base at another path trains right, another base's VAE "
        "wrong)"]


def test_text_embeddings_of_another_text_encoder_are_one_warning(base, tmp_path, capsys, recwarn, models_reached):
    """Training encodes the captions with its own text encoder: the stored embeddings are not used, so
    they do not make training wrong, but they say the dataset was made with another base."""
    dataset = latents(tmp_path, text=(77, 768), model="runwayml/stable-diffusion-v1-5")
    capsys.readouterr()
    assert run(tmp_path / "w", overrides(base), dataset) == 1
    assert said(recwarn, dataset) == [
        f"train_data.dataset_dir {dataset}: text_shape (77, 768) is not the text encoder of pretrained_model_path "
        f"{base}'s (max_position_embeddings 32, hidden_size 64): pre-computed with another base (model "
        "runwayml/stable-diffusion-v1-5); training encodes the captions itself, so only its latents are used, and "
        "their shape and scaling_factor fit"]


def test_the_same_base_by_another_name_is_not_warned_of(base, tmp_path, capsys, recwarn, models_reached, hub_cache):
    """A symbolic link to the base, or a hub id and its snapshot folder (what training reads it from), name
    the same base as the recorded model; another hub id does not."""
    link = tmp_path / "link"
    os.symlink(base, link)
    snapshot = cache_repo(hub_cache, "owner/sd", lambda folder: shutil.copytree(base, folder))
    for name, recorded, trained_on in (("by_link", base, str(link)), ("by_hub_id", "owner/sd", "owner/sd"),
                                       ("other_id", "owner/other", "owner/sd")):
        dataset = latents(tmp_path, name, model=recorded)
        capsys.readouterr()
        assert run(tmp_path / name, overrides(trained_on), dataset) == 1
        assert capsys.readouterr().err.endswith("error: models built\n")
        other = [f"train_data.dataset_dir {dataset}: pre-computed with model owner/other, not pretrained_model_path "
                 f"{snapshot}; its latents' shape and scaling_factor fit (the same base at another path trains "
                 "right, another base's VAE wrong)"]
        assert said(recwarn, dataset) == (other if name == "other_id" else []), name


def test_precomputed_with_a_relative_path_fits_its_absolute_path_and_refuses_another_size(
        base, tmp_path, capsys, recwarn, monkeypatch, models_reached):
    """The real data.precompute records a local base as its absolute path."""
    videos = ProceduralVideos(config=ProceduralConfig(name="v", num_examples=4, frames=4, size=16),
                              data_dir=str(tmp_path / "tfds"))
    videos.download_and_prepare()
    monkeypatch.chdir(os.path.dirname(base))
    assert precompute_cli.main(["--source", str(videos.data_dir), "--pretrained_model_path", os.path.basename(base),
                                "--data_dir", str(tmp_path / "tfds"), "--name", "sd", "--batch_size", "2"]) == 0
    monkeypatch.chdir(tmp_path)
    dataset = str(tmp_path / "tfds" / "precomputed_latents" / "sd" / "1.0.0")
    assert json.loads(open(os.path.join(dataset, "metadata.json")).read())["model"] == base
    capsys.readouterr()
    assert run(tmp_path / "w", overrides(base), dataset) == 1
    assert capsys.readouterr().err.endswith("error: models built\n") and said(recwarn, dataset) == []
    assert run(tmp_path / "w", overrides(base), dataset, sample_size=32) == 2
    assert capsys.readouterr().err == (
        f"error: train_data.dataset_dir {dataset}: latent_shape (4, 8, 8, 4) is 8x8 latents, frames of 16x16 px "
        f"through the VAE of pretrained_model_path {base} (2x downsampling); train_data.sample_size is 32\n")
