"""ml_collections configs: score_sde's experiment configs (same names, same values) and PDS ones.

They ship inside the package. Name one on the command line by file path or by name
(`--config=pds_jax/configs/ffhq_pds.py`, `--config=ffhq_pds`, `--config=ve/ffhq_ncsnpp_continuous`;
see `pds_jax.config_loader.load_config`), or import it
(`importlib.import_module('pds_jax.configs.ve.ffhq_ncsnpp_continuous').get_config()`).
In a repository checkout `configs/` is a link to this folder, so `--config=configs/ffhq_pds.py`
and `import configs.fashion_mnist_pds` keep working there. `common.py` documents every key.
"""
