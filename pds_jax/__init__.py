"""pds_jax: preconditioned diffusion sampling for score-based models in JAX/Flax."""

__version__ = "0.1.0"
