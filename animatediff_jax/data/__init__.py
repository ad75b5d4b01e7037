"""Video-caption data: the procedural world, TFDS builders, pre-computed latents, the input pipeline."""
