"""Training input: `step -> this host's rows of the global batch`, from any dataset of this package.

    source = source_from_config(cfg["train_data"])      # procedural world, built TFDS video or latents
    next_rows = TrainInput(source, tokenizer, global_batch=256, rows=(start, stop), seed=0)
    batch = next_rows(step)   # {"input_ids": (b, L) int32} plus either
                              #   "video": (b, F, H, W, 3) uint8                        (raw clips), or
                              #   "latent_mean", "latent_logvar": (b, F, h, w, c) float32 (pre-computed;
                              #   sample with precompute.sample_latents(rng, mean, logvar, scaling))

The input position is the step: host rows `[start, stop)` of step `s` are examples
`s * b ... (s + 1) * b - 1` of this host's shard (b = stop - start), so a run resumed at step `s`
continues exactly where it stopped, with nothing to save beyond the step. Consecutive steps stream
from a prefetching `InputPipeline`; a jump (resume) repositions it.
"""
from __future__ import annotations

from typing import Any, Mapping

from animatediff_jax.data.pipeline import InputPipeline, ProceduralSource, load_source


def source_from_config(train_data: Mapping[str, Any]):
    """The random-access source a `train_data` config section names.

    source: "procedural" (num_clips, seed, style, sample_size, sample_n_frames) or "tfds"
    (dataset_dir: a built dataset directory, video clips or pre-computed latents).
    """
    kind = train_data.get("source", "procedural")
    if kind == "procedural":
        return ProceduralSource(int(train_data["num_clips"]), seed=int(train_data.get("seed", 0)),
                                frames=int(train_data["sample_n_frames"]), size=int(train_data["sample_size"]),
                                style=train_data.get("style", "plain"))
    if kind == "tfds":
        if not train_data.get("dataset_dir"):
            raise ValueError("train_data.source = tfds needs train_data.dataset_dir (a built TFDS dataset directory)")
        return load_source(str(train_data["dataset_dir"]), what="train_data.dataset_dir")
    raise ValueError(f"train_data.source must be 'procedural' or 'tfds', got {kind!r}")


class TrainInput:
    """Callable `step -> batch rows` over a source (see module docstring)."""

    def __init__(self, source, tokenizer, global_batch: int, rows: tuple[int, int], *, seed: int = 0,
                 random_flip: bool = False, prefetch: int = 2, num_threads: int = 4):
        start, stop = rows
        per_host = stop - start
        if per_host < 1 or global_batch % per_host or start % per_host:
            raise ValueError(f"host rows {rows} do not tile a global batch of {global_batch}")
        self.tokenizer, self.per_host = tokenizer, per_host
        self.pipeline = InputPipeline(source, per_host, seed=seed, process_index=start // per_host,
                                      process_count=global_batch // per_host, random_flip=random_flip,
                                      prefetch=prefetch, num_threads=num_threads)
        self._next_step = 0

    def __call__(self, step: int) -> dict:
        if step != self._next_step:
            self.pipeline.restore({"examples_seen": int(step) * self.per_host})
        batch = next(self.pipeline)
        self._next_step = int(step) + 1
        out = {"input_ids": self.tokenizer(batch["caption"])}
        if "video" in batch:
            out["video"] = batch["video"]
        else:
            out["latent_mean"], out["latent_logvar"] = batch["latent_mean"], batch["latent_logvar"]
        return out

    def close(self) -> None:
        self.pipeline.close()
