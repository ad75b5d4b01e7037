"""Training from raw clips and from pre-computed latents: same clips, same VAE noise key -> same loss.

Both forms go through the real input path (procedural TFDS dataset -> precompute job -> TrainInput)
and the training engineer's loss (training/step.py, training/trainer.apply_functions).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from animatediff_jax.data.pipeline import load_source
from animatediff_jax.data.precomputed_latents import precompute, sample_latents, text_encoder, vae_encoder
from animatediff_jax.data.procedural_tfds import ProceduralConfig, ProceduralVideos
from animatediff_jax.data.train_input import TrainInput, source_from_config
from animatediff_jax.models.clip_text import CLIPTextModel
from animatediff_jax.models.configs import CLIPTextConfig, MotionConfig, UNetConfig, VAEConfig
from animatediff_jax.models.unet3d import UNet3DConditionModel
from animatediff_jax.models.vae import AutoencoderKL
from animatediff_jax.schedules import NoiseSchedule
from animatediff_jax.tokenizer import PromptTokenizer
from animatediff_jax.training.step import make_loss_and_grads
from tests.utils import random_params, rel_err, write_tokenizer

FRAMES, SIZE = 3, 16
VAE = VAEConfig(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=4, latent_channels=4)
TEXT = CLIPTextConfig(vocab_size=60, hidden_size=32, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      max_position_embeddings=48, eos_token_id=59, bos_token_id=58, pad_token_id=59)
# One resolution level, no mid-block module: the smallest UNet with spatial, cross and motion
# attention (compiling its backward pass dominates this test's time).
UNET = UNetConfig(block_out_channels=(32,), layers_per_block=1, cross_attention_dim=32, attention_head_dim=8,
                  norm_num_groups=8, sample_size=8, down_block_types=("CrossAttnDownBlock2D",),
                  up_block_types=("CrossAttnUpBlock2D",))
MOTION = MotionConfig(num_attention_heads=2, norm_num_groups=8, max_seq_length=8, use_mid_block=False)




def test_raw_and_precomputed_give_the_same_training_losses(tmp_path):
    from animatediff_jax.training.trainer import apply_functions

    # The real input path: procedural world -> TFDS (ArrayRecord) -> pre-computed latents.
    builder = ProceduralVideos(config=ProceduralConfig(name="t", num_examples=8, frames=FRAMES, size=SIZE),
                               data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare()
    raw_dir = str(builder.data_dir)
    vae, text = AutoencoderKL(VAE), CLIPTextModel(TEXT)
    unet = UNet3DConditionModel(UNET, MOTION)
    frozen = {"vae": random_params(vae, 0, jnp.zeros((1, SIZE, SIZE, 3)), method=AutoencoderKL.encode),
              "text_encoder": random_params(text, 1, jnp.zeros((1, 4), jnp.int32)), "unet": {}}
    params = random_params(unet, 2, jnp.zeros((1, FRAMES, 8, 8, 4)), jnp.zeros((1,), jnp.int32),
                           jnp.zeros((1, 1, 32)))
    tokenizer = PromptTokenizer.from_pretrained(write_tokenizer(tmp_path / "tok"), max_length=48)
    latents_dir = precompute(load_source(raw_dir), vae_encoder(vae, frozen["vae"]),
                             text_encoder(text, frozen["text_encoder"], tokenizer), str(tmp_path / "tfds"), "lat",
                             batch_size=4, scaling_factor=VAE.scaling_factor)

    models = apply_functions(unet, vae, text, VAE)
    null_ids = jnp.asarray(tokenizer([""])[0])
    loss_and_grads = jax.jit(make_loss_and_grads(models, NoiseSchedule.preset("B").alphas_cumprod, null_ids,
                                                 null_text_ratio=0.3))
    optimizer = optax.adamw(1e-3)
    losses = {}
    for form, directory in (("raw", raw_dir), ("latents", latents_dir)):
        # Host 1 of 2 (rows 2..4 of a global batch of 4), as a multi-host run would read it.
        source = source_from_config({"source": "tfds", "dataset_dir": directory})
        rows = TrainInput(source, tokenizer, global_batch=4, rows=(2, 4), seed=3)
        p, opt = params, optimizer.init(params)
        losses[form] = []
        for step in range(3):
            batch = rows(step)
            rng = jax.random.fold_in(jax.random.PRNGKey(0), step)
            if form == "latents":  # the sample the video path draws with this step's VAE key
                rng_vae = jax.random.split(rng, 3)[2]
                batch = {"input_ids": batch["input_ids"],
                         "latents": sample_latents(rng_vae, batch["latent_mean"], batch["latent_logvar"],
                                                   VAE.scaling_factor)}
            else:
                assert batch["video"].shape == (2, FRAMES, SIZE, SIZE, 3)
            loss, grads = loss_and_grads(p, frozen, batch, rng)
            updates, opt = optimizer.update(grads, opt, p)
            p = optax.apply_updates(p, updates)
            losses[form].append(float(loss))
        rows.close()
    assert np.all(np.isfinite(losses["raw"])) and len(set(losses["raw"])) == 3
    assert rel_err(np.array(losses["latents"]), np.array(losses["raw"])) < 1e-5, losses
