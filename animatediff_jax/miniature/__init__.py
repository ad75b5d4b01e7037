"""A miniature AnimateDiff: procedural world, tiny SD-architecture networks, shipped weights."""
