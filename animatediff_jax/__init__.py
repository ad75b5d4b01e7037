"""AnimateDiff in JAX/Flax: inflated SD1.x UNet + motion modules, training, sampling."""

__version__ = "0.1.0"
