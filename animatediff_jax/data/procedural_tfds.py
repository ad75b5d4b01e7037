"""The procedural world (`procedural.py`) as a TFDS builder, so tests and examples use the real input path.

    from animatediff_jax.data.procedural_tfds import ProceduralVideos, ProceduralConfig
    b = ProceduralVideos(config=ProceduralConfig(name="tiny", num_examples=64, size=32, frames=8),
                         data_dir="/tmp/tfds")
    b.download_and_prepare()                  # deterministic from `seed`: same files every time
    source = b.as_data_source()["train"]      # ArrayRecord, random access, no TensorFlow needed

Examples have the same "video"/"caption" features as the WebVid builder, plus the sampled
attributes ("color", "shape", "direction", "index") for evaluation. `motion=False` builds the image
dataset (frames=1, captions without motion words) used for image fine-tuning and personalization.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from animatediff_jax.data import procedural


@dataclasses.dataclass(eq=False)
class ProceduralConfig(tfds.core.BuilderConfig):
    """A procedural dataset: `num_examples` examples of the world `seed` in one background `style`."""
    num_examples: int = 1024
    seed: int = 0
    frames: int = 16
    size: int = 64
    style: str = "plain"
    trigger: str = ""          # prefixed to every caption ("sks, a red circle ..."); "" = none
    motion: bool = True        # False: single images, captions without motion words


class ProceduralVideos(tfds.core.GeneratorBasedBuilder):
    """Moving coloured shapes captioned with colour, shape and direction (see `procedural.py`)."""
    name = "procedural_videos"
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIG_CLASS = ProceduralConfig
    BUILDER_CONFIGS = [ProceduralConfig(name="default")]

    def __init__(self, *, file_format: str = "array_record", **kwargs):
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        frames = c.frames if c.motion else 1
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"Procedural world seed {c.seed}, style {c.style}, {frames}x{c.size}x{c.size}.",
            features=tfds.features.FeaturesDict({
                "video": tfds.features.Tensor(shape=(frames, c.size, c.size, 3), dtype=np.uint8,
                                              encoding=tfds.features.Encoding.ZLIB),
                "caption": tfds.features.Text(),
                "color": tfds.features.Text(),
                "shape": tfds.features.Text(),
                "direction": tfds.features.Text(),
                "index": np.int64,
            }),
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,  # record i is example i of the source
        )

    def _split_generators(self, dl_manager):
        c = self.builder_config
        if c.num_examples < 1:
            raise ValueError(f"procedural dataset {c.name!r}: num_examples must be >= 1, got {c.num_examples}")
        if c.style not in procedural.STYLES:
            raise ValueError(f"procedural dataset {c.name!r}: unknown style {c.style!r} "
                             f"(expected one of {procedural.STYLES})")
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        c = self.builder_config
        trigger = c.trigger or None
        for index in range(c.num_examples):
            if c.motion:
                video, caption = procedural.generate_clip(c.seed, index, c.frames, c.size, c.style, trigger)
                spec = procedural.clip_spec(c.seed, index, c.frames, c.size)
            else:
                image, caption = procedural.generate_image(c.seed, index, c.size, c.style, trigger)
                video, spec = image[None], procedural.clip_spec(c.seed, index, 1, c.size)
            yield index, {"video": video, "caption": caption, "color": spec.color, "shape": spec.shape,
                          "direction": spec.direction if c.motion else "", "index": index}
