"""pds_jax command line (score_sde style: absl flags + ml_collections config files).

  python main.py --config=configs/fashion_mnist_pds.py --workdir=runs/fm --mode=compare
  python main.py --config=configs/ffhq_pds.py --workdir=runs/ffhq            # sample with PDS
  python main.py --config=configs/ffhq_pds.py --workdir=runs/ffhq --config.sampling.pds.speed_up=20
  python main.py --config=configs/fashion_mnist_pds.py --workdir=runs/fm --mode=estimate
  python main.py --config=configs/fashion_mnist_pds.py --workdir=runs/fm_train --mode=train

The official PDS flags are accepted as aliases: --speed_up, --alpha, --freq_mask_path,
--space_mask_path and --eval_folder (they set config.sampling.pds.* / the output folder).
"""

from __future__ import annotations

import importlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

MODES = ("sample", "compare", "estimate", "train", "eval", "benchmark")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Folder for this run's outputs (checkpoints, samples, filters).")
flags.DEFINE_enum("mode", "sample", MODES, "What to do.")
flags.DEFINE_string("eval_folder", None, "Name of the output subfolder of workdir (official PDS flag).")
flags.DEFINE_float("speed_up", None, "Alias of --config.sampling.pds.speed_up (official PDS flag).")
flags.DEFINE_float("alpha", None, "Alias of --config.sampling.pds.alpha (official PDS flag).")
flags.DEFINE_string("freq_mask_path", None, "Alias of --config.sampling.pds.freq_filter (official PDS flag).")
flags.DEFINE_string("space_mask_path", None, "Alias of --config.sampling.pds.space_filter (official PDS flag).")
flags.mark_flags_as_required(["config", "workdir"])

ALIASES = {
    "speed_up": "speed_up",
    "alpha": "alpha",
    "freq_mask_path": "freq_filter",
    "space_mask_path": "space_filter",
}


def apply_aliases(config):
    """Copy the official PDS flags into config.sampling.pds."""
    for flag, key in ALIASES.items():
        value = getattr(FLAGS, flag)
        if value is not None:
            config.sampling.pds[key] = value
    return config


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = apply_aliases(FLAGS.config)
    module = importlib.import_module(f"pds_jax.modes.{FLAGS.mode}")
    kwargs = {"folder": FLAGS.eval_folder} if FLAGS.eval_folder and FLAGS.mode in ("sample", "eval") else {}
    try:
        module.run(config, FLAGS.workdir, **kwargs)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        # User-facing problems (missing checkpoint, bad config value, existing output):
        # one clear message, no traceback. Set --verbosity=1 for the traceback.
        if logging.get_verbosity() >= logging.DEBUG:
            raise
        print(f"error ({type(e).__name__}): {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
