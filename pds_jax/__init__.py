"""pds_jax: preconditioned diffusion sampling for score-based models in JAX/Flax."""

__version__ = "0.1.0"


def __getattr__(name):
    """`pds_jax.<module>` after a bare `import pds_jax` (as the docs write `pds_jax.sharding...`):
    submodules are imported on first use, so `import pds_jax` itself stays cheap."""
    import importlib
    import pkgutil

    if name in {m.name for m in pkgutil.iter_modules(__path__)}:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'pds_jax' has no attribute {name!r}")
