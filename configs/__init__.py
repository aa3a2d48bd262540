"""ml_collections configs: score_sde's experiment configs (same names, same values) and PDS ones.

Load a file with `ml_collections.config_flags` (e.g. `--config=configs/ffhq_pds.py`) or
`importlib.import_module('configs.ve.ffhq_ncsnpp_continuous').get_config()` with the
repository root on `sys.path`. `configs/common.py` documents every key.
"""
