"""The pre-computed latents dataset: a TFDS builder that encodes a built video dataset once with the
frozen VAE and text encoder, and `sample_latents` for training's own draw from the stored posterior.
The CLI and the dataset's layout: `animatediff_jax/data/precompute.py`."""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from animatediff_jax.errors import InputError
from animatediff_jax.progress import progress_bar

# (video uint8 (B, F, H, W, 3)) -> (mean, logvar), each (B, F, h, w, c) float32, unscaled
EncodeVideo = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
# (captions [str] * B) -> (input_ids (B, L) int32, embeddings (B, L, D) float32)
EncodeText = Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(eq=False)
class PrecomputedConfig(tfds.core.BuilderConfig):
    """Shapes of the encoded examples (filled in by `precompute` from a first encoded batch)."""
    latent_shape: tuple[int, ...] = ()   # (F, h, w, c)
    text_shape: tuple[int, ...] = ()     # (L, D)
    batch_size: int = 8
    scaling_factor: float = 0.18215
    model: str = ""                      # where the frozen models came from (recorded in metadata)
    source: str = ""                     # the video dataset encoded


class PrecomputedLatents(tfds.core.GeneratorBasedBuilder):
    """Encoded clips + captions of a video source (see module docstring)."""
    name = "precomputed_latents"
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIG_CLASS = PrecomputedConfig

    def __init__(self, *, source=None, encode_video: EncodeVideo | None = None,
                 encode_text: EncodeText | None = None, file_format: str = "array_record", **kwargs):
        self._source, self._encode_video, self._encode_text = source, encode_video, encode_text
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description="VAE posterior moments (unscaled) and text-encoder embeddings of video clips.",
            features=tfds.features.FeaturesDict({
                "latent_mean": tfds.features.Tensor(shape=tuple(c.latent_shape), dtype=np.float32),
                "latent_logvar": tfds.features.Tensor(shape=tuple(c.latent_shape), dtype=np.float32),
                "text_embedding": tfds.features.Tensor(shape=tuple(c.text_shape), dtype=np.float32),
                "input_ids": tfds.features.Tensor(shape=tuple(c.text_shape[:1]), dtype=np.int32),
                "caption": tfds.features.Text(),
                "source_index": np.int64,
            }),
            metadata=tfds.core.MetadataDict(scaling_factor=c.scaling_factor, model=c.model, source=c.source),
            disable_shuffling=True,  # record i is example i of the source
        )

    def _split_generators(self, dl_manager):
        if self._source is None or self._encode_video is None or self._encode_text is None:
            raise ValueError("PrecomputedLatents needs source, encode_video and encode_text to build")
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i, example in enumerate(encode_examples(self._source, self._encode_video, self._encode_text,
                                                    self.builder_config.batch_size)):
            yield i, example


def encode_examples(source, encode_video: EncodeVideo, encode_text: EncodeText,
                    batch_size: int) -> Iterator[dict]:
    """Examples of `source` in order, encoded `batch_size` at a time (a short last batch is padded
    by repeating its last row, so the encoders always see one shape and compile once)."""
    n = len(source)
    with progress_bar("encoding", total=-(-n // batch_size), enabled=n > batch_size, unit="batch") as bar:
        for start in range(0, n, batch_size):
            rows = [source[i] for i in range(start, min(start + batch_size, n))]
            padded = rows + [rows[-1]] * (batch_size - len(rows))
            captions = [_text(r["caption"]) for r in padded]
            mean, logvar = encode_video(np.stack([r["video"] for r in padded]))
            ids, emb = encode_text(captions)
            for j in range(len(rows)):
                yield {"latent_mean": np.asarray(mean[j], np.float32),
                       "latent_logvar": np.asarray(logvar[j], np.float32),
                       "text_embedding": np.asarray(emb[j], np.float32), "input_ids": np.asarray(ids[j], np.int32),
                       "caption": captions[j], "source_index": start + j}
            bar.update(1)


def sample_latents(key, mean, logvar, scaling_factor: float):
    """Scaled latent sample (B, F, h, w, c) from stored moments, drawn exactly as encoding the video in
    training does: frames folded into the batch, `vae.sample_latent(key, ...)`, times the scaling factor."""
    from animatediff_jax.models.vae import sample_latent

    b, f = mean.shape[:2]
    fold = lambda m: m.reshape((b * f,) + m.shape[2:])
    z = sample_latent(key, fold(mean), fold(logvar)) * scaling_factor
    return z.reshape(mean.shape)


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def precompute(source, encode_video: EncodeVideo, encode_text: EncodeText, data_dir: str, name: str, *,
               batch_size: int = 8, num_shards: int | None = None, scaling_factor: float = 0.18215,
               model: str = "", source_name: str = "") -> str:
    """Encode all of `source` into `<data_dir>/precomputed_latents/<name>/1.0.0`; returns that directory."""
    if len(source) == 0:
        raise InputError(f"{source_name or 'source'}: the source dataset is empty (no examples)")
    first = [source[i % len(source)] for i in range(batch_size)]  # the shape every encoder call will see
    mean, _ = encode_video(np.stack([r["video"] for r in first]))
    _, emb = encode_text([_text(r["caption"]) for r in first])
    config = PrecomputedConfig(name=name, latent_shape=tuple(mean.shape[1:]), text_shape=tuple(emb.shape[1:]),
                               batch_size=batch_size, scaling_factor=scaling_factor, model=model,
                               source=source_name)
    builder = PrecomputedLatents(source=source, encode_video=encode_video, encode_text=encode_text,
                                 config=config, data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=num_shards))
    _, null = encode_text([""] * batch_size)
    _save_npy(os.path.join(str(builder.data_dir), "null_text_embedding.npy"), np.asarray(null[0], np.float32))
    return str(builder.data_dir)


def _save_npy(path: str, array: np.ndarray) -> None:
    tmp = path + ".tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the frozen models

def vae_encoder(vae, params, chunk_size: int = 8) -> EncodeVideo:
    """EncodeVideo from an `AutoencoderKL` module and its params (frames encoded `chunk_size` at a time)."""
    import jax
    import jax.numpy as jnp

    from animatediff_jax.models.vae import AutoencoderKL
    from animatediff_jax.xla_options import jit

    @jit
    def moments(video):  # (B, F, H, W, 3) uint8 -> 2 x (B, F, h, w, c)
        b, f = video.shape[:2]
        x = video.reshape((b * f,) + video.shape[2:]).astype(jnp.float32) / 127.5 - 1.0
        n = x.shape[0]
        chunk = min(chunk_size, n)
        x = jnp.pad(x, [(0, (-n) % chunk)] + [(0, 0)] * 3).reshape((-1, chunk) + x.shape[1:])
        mean, logvar = jax.lax.map(lambda c: vae.apply({"params": params}, c, method=AutoencoderKL.encode), x)
        fold = lambda m: m.reshape((-1,) + m.shape[2:])[:n].reshape((b, f) + m.shape[2:]).astype(jnp.float32)
        return fold(mean), fold(logvar)

    return lambda video: tuple(np.asarray(m) for m in moments(jnp.asarray(video)))


def text_encoder(text_model, params, tokenizer) -> EncodeText:
    """EncodeText from a `CLIPTextModel`, its params and a `PromptTokenizer`."""
    import jax.numpy as jnp

    from animatediff_jax.xla_options import jit

    embed = jit(lambda ids: text_model.apply({"params": params}, ids).last_hidden_state.astype(jnp.float32))

    def encode(captions):
        ids = tokenizer(list(captions))
        return ids, np.asarray(embed(jnp.asarray(ids)))

    return encode
