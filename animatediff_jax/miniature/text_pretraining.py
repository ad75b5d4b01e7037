"""Contrastive pre-training of the miniature's CLIP text encoder (CLIP, Radford et al. 2021).

SD1.x conditions on a text encoder that was trained beforehand, against images, so its words carry
meaning into the UNet's cross-attention; the miniature's was a frozen random initialisation (issue
15), so "red" at position 2 and "red" after a trigger word were unrelated features. Here the text
encoder learns from the world itself, before any UNet sees it:

- a small convolutional clip encoder (`ClipEncoder`) sees the first, middle and last frame stacked on
  the channel axis, so colour, shape, background style and direction of motion are all visible to it;
- captions come from every domain ("a red circle moving left", "sks, a red circle moving left on
  stripes background", "xyz, ... on checker background"), with motion words for moving clips and
  without them for still images (the personalization captions), so each word keeps its meaning
  wherever it stands in the caption;
- the loss is CLIP's symmetric InfoNCE over a batch; many examples share a caption, so the target of
  each row is uniform over the batch items with the same caption (not the diagonal alone).

Only the text encoder is kept (SD's UNet reads CLIP's last hidden state, not its projections).
`caption_retrieval` measures what it learned: for held-out clips, how often the nearest caption among
every caption the world can write is theirs, and says their domain, colour, shape and direction.
"""
from __future__ import annotations

import itertools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from animatediff_jax.data import procedural
from animatediff_jax.miniature import world
from animatediff_jax.models.clip_text import CLIPTextModel
from animatediff_jax.models.configs import CLIPTextConfig
from animatediff_jax.xla_options import jit

KEY_FRAMES = (0, world.FRAMES // 2, world.FRAMES - 1)  # frames the clip encoder sees
EMBED = 64  # width of the shared caption/clip space


class ClipEncoder(nn.Module):
    """(B, SIZE, SIZE, 3 * len(KEY_FRAMES)) float in [-1, 1] -> (B, EMBED).

    Two paths from 16x16 features whose receptive fields are about an object's size: their maximum
    over the frame (what the object is, wherever it is: colour, shape, background) and, after two more
    stride-2 convolutions, a dense layer over the whole 4x4 grid (where the object is in each key
    frame: the direction). Without the pooled path, shape was read from 57-60% of held-out clips after
    600-2000 steps (a dense layer must learn each shape at each place); with it, 97% after 600."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.gelu(nn.Conv(32, (3, 3))(x))
        x = nn.gelu(nn.Conv(32, (3, 3), strides=2)(x))
        local = nn.gelu(nn.Conv(64, (3, 3))(x))
        pooled = local.max(axis=(1, 2))
        x = nn.gelu(nn.Conv(64, (3, 3), strides=2)(local))
        x = nn.gelu(nn.Conv(64, (3, 3), strides=2)(x))
        return nn.Dense(EMBED)(jnp.concatenate([x.reshape(x.shape[0], -1), pooled], axis=-1))


class CaptionClipModel(nn.Module):
    """The text encoder with its projection, the clip encoder, and CLIP's learned temperature."""
    text: CLIPTextConfig

    def setup(self):
        self.text_encoder = CLIPTextModel(self.text)
        self.text_projection = nn.Dense(EMBED, use_bias=False)
        self.clip_encoder = ClipEncoder()
        self.logit_scale = self.param("logit_scale", lambda _: jnp.log(jnp.float32(1 / 0.07)))

    def embed_text(self, ids: jax.Array) -> jax.Array:
        """(B, L) token ids -> (B, EMBED) unit vectors (projected pooled output, as CLIP)."""
        return _unit(self.text_projection(self.text_encoder(ids).pooler_output))

    def embed_clip(self, frames: jax.Array) -> jax.Array:
        return _unit(self.clip_encoder(frames))

    def __call__(self, ids: jax.Array, frames: jax.Array) -> jax.Array:
        """(B, B) logits: caption i against clip j."""
        return jnp.exp(self.logit_scale) * self.embed_text(ids) @ self.embed_clip(frames).T


def _unit(x: jax.Array) -> jax.Array:
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def example(seed: int, index: int) -> tuple[np.ndarray, str]:
    """Example `index` of the pre-training data: ((SIZE, SIZE, 9) float32 key frames in [-1, 1], caption).
    Domains cycle plain / DreamBooth / LoRA; every other triple is a still image (its caption has no
    motion words, its three key frames are the same image)."""
    domain = (world.BASE, world.DREAMBOOTH, world.LORA)[index % 3]
    still = (index // 3) % 2 == 1
    spec = procedural.clip_spec(seed, index, 1 if still else world.FRAMES, world.SIZE)
    frames = procedural.render(spec, domain.style)
    keys = frames[[0, 0, 0]] if still else frames[list(KEY_FRAMES)]
    stacked = np.concatenate(list(keys), axis=-1).astype(np.float32) / 127.5 - 1.0
    return stacked, procedural.caption(spec, motion=not still, style=domain.style, trigger=domain.trigger)


def dataset(seed: int, count: int) -> tuple[np.ndarray, list[str]]:
    """Examples 0..count-1: ((count, SIZE, SIZE, 9) float32, captions)."""
    pairs = [example(seed, i) for i in range(count)]
    return np.stack([f for f, _ in pairs]), [c for _, c in pairs]


def every_caption() -> list[tuple[str, dict]]:
    """Every caption the pre-training data can contain (each domain, moving and still), with what it
    says: {'domain', 'color', 'shape', 'direction' (None for a still image)}."""
    out = []
    for domain, color, shape in itertools.product((world.BASE, world.DREAMBOOTH, world.LORA), procedural.COLORS,
                                                  procedural.SHAPES):
        for direction in (None,) + procedural.DIRECTIONS:
            spec = procedural.ClipSpec(color, shape, direction or "left", (0, 0, 0), 1.0, (0.0, 0.0), 0.0, 1,
                                       world.SIZE)
            out.append((procedural.caption(spec, motion=direction is not None, style=domain.style,
                                           trigger=domain.trigger),
                        {"domain": domain.name, "color": color, "shape": shape, "direction": direction}))
    return out


def contrastive_loss(logits: jax.Array, same: jax.Array) -> jax.Array:
    """Symmetric InfoNCE; `same` (B, B) marks pairs with equal captions (the targets)."""
    targets = same / same.sum(-1, keepdims=True)
    return (optax.softmax_cross_entropy(logits, targets).mean()
            + optax.softmax_cross_entropy(logits.T, targets).mean()) / 2


def pretrain_text_encoder(config: CLIPTextConfig, tokenizer, *, steps: int, batch: int, pool: int, seed: int,
                          data_seed: int, learning_rate: float = 1e-3, log_every: int = 200
                          ) -> tuple[dict, dict]:
    """Train the text encoder (and the throw-away clip encoder) for `steps` AdamW steps on batches drawn
    from `pool` pre-rendered examples of dataset `data_seed`. Returns (text encoder params, metrics:
    final loss and held-out caption retrieval)."""
    frames, captions = dataset(data_seed, pool)
    ids = np.asarray(tokenizer(captions))
    caption_index = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    labels = np.asarray([caption_index[c] for c in captions])
    model = CaptionClipModel(config)
    params = model.init(jax.random.PRNGKey(seed), ids[:2], frames[:2])["params"]
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, min(100, steps // 2), max(steps, 1))
    optimizer = optax.adamw(schedule, weight_decay=1e-2)
    opt_state = optimizer.init(params)

    @jit
    def step_fn(p, o, ids, frames, labels):
        def loss_fn(p):
            return contrastive_loss(model.apply({"params": p}, ids, frames), labels[:, None] == labels[None, :])
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, o = optimizer.update(grads, o, p)
        return optax.apply_updates(p, updates), o, loss

    rng, start, losses = np.random.default_rng(seed), time.time(), []
    for step in range(steps):
        pick = rng.choice(pool, size=batch, replace=False)
        params, opt_state, loss = step_fn(params, opt_state, ids[pick], frames[pick], labels[pick])
        losses.append(loss)
        if log_every and ((step + 1) % log_every == 0 or step == steps - 1):
            print(f"  text step {step + 1:5d}/{steps}  loss {float(np.mean(jax.device_get(losses[-log_every:]))):.4f}"
                  f"  ({time.time() - start:.0f}s)", flush=True)
    tail = float(np.mean(jax.device_get(losses[-max(steps // 10, 1):])))
    held_out = caption_retrieval(model, params, tokenizer, data_seed + 1, count=512)
    return params["text_encoder"], {"loss": tail, "caption_retrieval": held_out}


def caption_retrieval(model: CaptionClipModel, params: dict, tokenizer, seed: int, count: int) -> dict:
    """For `count` examples of dataset `seed`, the caption nearest to each among `every_caption()`:
    {'caption': fraction where it is theirs, and per attribute (domain, color, shape, direction) the
    fraction where it says what theirs says}."""
    frames, captions = dataset(seed, count)
    candidates = every_caption()
    said = dict(candidates)
    text = model.apply({"params": params}, np.asarray(tokenizer([c for c, _ in candidates])),
                       method=CaptionClipModel.embed_text)
    clip = model.apply({"params": params}, frames, method=CaptionClipModel.embed_clip)
    nearest = [candidates[n][1] for n in np.asarray(jnp.argmax(clip @ text.T, axis=-1))]
    truth = [said[c] for c in captions]
    return {"caption": float(np.mean([n == t for n, t in zip(nearest, truth)])),
            **{key: float(np.mean([n[key] == t[key] for n, t in zip(nearest, truth)]))
               for key in ("domain", "color", "shape", "direction")}}
