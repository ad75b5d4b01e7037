"""Pre-computed latents: the written dataset holds exactly what the frozen models give, per host."""
import os

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from animatediff_jax.data.pipeline import InputPipeline, ProceduralSource, load_source, normalize_video
from animatediff_jax.data.precomputed_latents import precompute, sample_latents, text_encoder, vae_encoder
from animatediff_jax.models.clip_text import CLIPTextModel
from animatediff_jax.models.configs import CLIPTextConfig, VAEConfig
from animatediff_jax.models.vae import AutoencoderKL, sample_latent
from animatediff_jax.tokenizer import PromptTokenizer
from tests.utils import random_params, rel_err, write_tokenizer

VAE = VAEConfig(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=4, latent_channels=4)


TEXT = CLIPTextConfig(vocab_size=56, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, max_position_embeddings=40, eos_token_id=55, bos_token_id=54,
                      pad_token_id=55)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pre")
    vae, text = AutoencoderKL(VAE), CLIPTextModel(TEXT)
    vae_params = random_params(vae, 0, jnp.zeros((1, 16, 16, 3)), method=AutoencoderKL.encode)  # encoder only
    text_params = random_params(text, 1, jnp.zeros((1, 4), jnp.int32))
    tokenizer = PromptTokenizer.from_pretrained(write_tokenizer(tmp / "tok"), max_length=40)
    source = ProceduralSource(6, seed=3, frames=3, size=16)
    out = precompute(source, vae_encoder(vae, vae_params, chunk_size=8), text_encoder(text, text_params, tokenizer),
                     str(tmp / "tfds"), "tiny", batch_size=4, num_shards=2, scaling_factor=VAE.scaling_factor)
    return out, source, vae, vae_params, text, text_params, tokenizer


def test_written_latents_and_embeddings_match_the_models(built):
    out, source, vae, vae_params, text, text_params, tokenizer = built
    data = load_source(out)
    assert len(data) == len(source)
    assert len([p for p in os.listdir(out) if ".array_record-" in p]) == 2
    examples = [data[i] for i in range(len(data))]
    assert sorted(int(ex["source_index"]) for ex in examples) == list(range(6))
    videos = np.stack([source[int(ex["source_index"])]["video"] for ex in examples])  # (6, 3, 16, 16, 3)
    mean, logvar = jax.jit(lambda x: vae.apply({"params": vae_params}, x, method=AutoencoderKL.encode))(
        jnp.asarray(normalize_video(videos)).reshape(18, 16, 16, 3))
    assert rel_err(np.stack([ex["latent_mean"] for ex in examples]), mean.reshape(6, 3, 8, 8, 4)) < 1e-5
    assert rel_err(np.stack([ex["latent_logvar"] for ex in examples]), logvar.reshape(6, 3, 8, 8, 4)) < 1e-5
    captions = [source[int(ex["source_index"])]["caption"] for ex in examples] + [""]
    assert [ex["caption"].decode() for ex in examples] == captions[:-1]
    ids = tokenizer(captions)
    np.testing.assert_array_equal(np.stack([ex["input_ids"] for ex in examples]), ids[:-1])
    emb = jax.jit(lambda i: text.apply({"params": text_params}, i).last_hidden_state)(ids)  # (7, 40, 16)
    assert rel_err(np.stack([ex["text_embedding"] for ex in examples]), emb[:-1]) < 1e-5
    assert rel_err(np.load(f"{out}/null_text_embedding.npy"), emb[-1]) < 1e-5


def test_sampled_latents_equal_encoding_the_video_with_the_same_key(built):
    """What training does with either form: same key -> the same latent sample."""
    out, source, vae, vae_params, *_ = built
    data = load_source(out)
    key = jax.random.PRNGKey(7)
    batch = next(InputPipeline(data, batch_size=2, seed=0, shuffle=False))
    videos = np.stack([source[int(k)]["video"] for k in batch["source_index"]])  # (2, 3, 16, 16, 3)
    x = jnp.asarray(normalize_video(videos)).reshape(6, 16, 16, 3)
    mean, logvar = jax.jit(lambda x: vae.apply({"params": vae_params}, x, method=AutoencoderKL.encode))(x)
    direct = sample_latent(key, mean, logvar).reshape(2, 3, 8, 8, 4)
    from_disk = sample_latents(key, batch["latent_mean"], batch["latent_logvar"], VAE.scaling_factor)
    assert rel_err(from_disk, direct * VAE.scaling_factor) < 1e-5


def test_two_hosts_split_the_precomputed_dataset(built):
    data = load_source(built[0])
    hosts = [InputPipeline(data, batch_size=3, seed=2, process_index=p, process_count=2) for p in range(2)]
    got = [set(next(h)["source_index"].tolist()) for h in hosts]
    assert not got[0] & got[1] and got[0] | got[1] == set(range(6))
    with pytest.raises(ValueError, match="cannot be flipped"):
        next(InputPipeline(data, batch_size=2, random_flip=True))
