"""Flax networks of AnimateDiff: inflated UNet + motion modules, VAE, CLIP text encoder."""
