"""The pre-computed latents dataset: a TFDS builder that encodes a built video dataset once with the
frozen VAE and text encoder, and `sample_latents` for training's own draw from the stored posterior.
The CLI and the dataset's layout: `animatediff_jax/data/precompute.py`."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from typing import Callable, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from animatediff_jax.errors import InputError, UsageError, UserError
from animatediff_jax.progress import progress_bar
from animatediff_jax.text_files import read_text

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


# --------------------------------------------------------------------------- fit to a training run

def check_fits(dataset_dir: str, example: dict, *, frames: int, size: int, base: str | None, vae_config,
               text_config, what: str = "train_data.dataset_dir") -> None:
    """Refuse, before any model loads, pre-computed latents that would train the run wrong: UsageError, one
    line naming `what` `dataset_dir`, the dataset's field and value and the config key and value, when
    the latents (`example`, its first) are not `frames` (train_data.sample_n_frames) frames of `size`
    (train_data.sample_size) pixels through the run's VAE, not of its latent channels, or when the
    recorded `scaling_factor` is not its VAE's. The run's VAE and text encoder are `base`'s
    (pretrained_model_path: their configs read without the weights; where they cannot be read so, the
    model read says why, and only the frames are checked here), else `vae_config` / `text_config` (a
    random base). One warning line when the latents fit but were recorded from another `model` (the
    same base may live at another path), or their text embeddings are not the run's text encoder's
    shape (training encodes the captions itself: the embeddings are unused, but they were made by
    another base)."""
    where = f"{what} {dataset_dir}"
    meta = _metadata(dataset_dir)
    shape = tuple(int(n) for n in np.shape(example["latent_mean"]))
    if shape[0] != frames:
        raise UsageError(f"{where}: latent_shape {shape} is clips of {shape[0]} frames; train_data.sample_n_frames "
                         f"is {frames} (pre-compute clips of {frames} frames, or set train_data.sample_n_frames="
                         f"{shape[0]})")
    configs = base_configs(base) if base else (vae_config, text_config)
    if configs is None:
        return
    vae, text = configs
    run = f"pretrained_model_path {base}" if base else "vae_config"
    factor, (h, w, channels) = vae.downsample_factor, shape[1:4]
    if (h, w) != (size // factor,) * 2 or size % factor:
        raise UsageError(f"{where}: latent_shape {shape} is {h}x{w} latents, frames of {h * factor}x{w * factor} px "
                         f"through the VAE of {run} ({factor}x downsampling); train_data.sample_size is {size}")
    if channels != vae.latent_channels:
        raise UsageError(f"{where}: latent_shape {shape} has {channels} latent channels; the VAE of {run} has "
                         f"latent_channels {vae.latent_channels} (the latents were encoded with another VAE)")
    recorded = meta.get("scaling_factor")
    if isinstance(recorded, (int, float)) and not math.isclose(recorded, vae.scaling_factor, rel_tol=1e-6):
        raise UsageError(f"{where}: scaling_factor {recorded} (of the VAE it was encoded with, model "
                         f"{meta.get('model') or 'unrecorded'}); the VAE of {run} has scaling_factor "
                         f"{vae.scaling_factor} (pre-compute the dataset with this base)")
    model = meta.get("model")
    text_shape = tuple(int(n) for n in np.shape(example.get("text_embedding", ())))
    want_text = (text.max_position_embeddings, text.hidden_size)
    if text_shape and text_shape != want_text:
        warnings.warn(f"{where}: text_shape {text_shape} is not the text encoder of {run}'s (max_position_embeddings "
                      f"{want_text[0]}, hidden_size {want_text[1]}): pre-computed with another base (model "
                      f"{model or 'unrecorded'}); training encodes the captions itself, so only its latents are "
                      "used, and their shape and scaling_factor fit", stacklevel=2)
    elif base and isinstance(model, str) and model and not _same_model(model, base):
        warnings.warn(f"{where}: pre-computed with model {model}, not pretrained_model_path {base}; its latents' "
                      "shape and scaling_factor fit (the same base at another path trains right, another base's "
                      "VAE wrong)", stacklevel=2)


def base_configs(path: str):
    """(VAE config, text encoder config) of the SD1.x base at `path`, from its configs and weight
    headers alone (no tensor read); None where they cannot be had so (not a local path; a base the
    model read refuses, and says why)."""
    from animatediff_jax.checkpoint import network_config, read_metadata  # noqa: PLC0415 - these import JAX
    from animatediff_jax.loading import is_converted_base  # noqa: PLC0415
    from convert.base import plan_base  # noqa: PLC0415

    if not os.path.exists(path):
        return None
    try:
        with warnings.catch_warnings():  # the model read says them once
            warnings.simplefilter("ignore")
            if is_converted_base(path):
                configs = tuple(network_config(read_metadata(os.path.join(path, f"{n}.safetensors")),
                                               os.path.join(path, f"{n}.safetensors"), n)
                                for n in ("vae", "text_encoder"))
                return None if None in configs else configs
            plan = plan_base(path, check=False)
            try:
                return plan.networks["vae"].config, plan.networks["text_encoder"].config
            finally:
                plan.close()
    except (UserError, OSError, ValueError, KeyError):
        return None


def _metadata(dataset_dir: str) -> dict:
    """The dataset's recorded metadata (`metadata.json`: scaling_factor, model, source); {} without it."""
    try:
        meta = json.loads(read_text(os.path.join(dataset_dir, "metadata.json")))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _same_model(recorded: str, base: str) -> bool:
    """Whether the `model` a dataset recorded names `base`: the same path, the same file or folder, or
    a hub id and its snapshot folder in the Hugging Face cache (`models--owner--name/snapshots/…`)."""
    if recorded == base:
        return True
    if os.path.exists(recorded) and os.path.exists(base):
        return os.path.realpath(recorded) == os.path.realpath(base)
    return any(not os.path.exists(a) and a.count("/") == 1
               and "models--" + a.replace("/", "--") in os.path.normpath(b).split(os.sep)
               for a, b in ((recorded, base), (base, recorded)))


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
