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

import difflib
import importlib
import inspect
import sys

from absl import app, flags, logging
from ml_collections import config_flags

MODES = ("sample", "compare", "estimate", "train", "eval", "benchmark", "inpaint", "colorize")

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


def _unknown_override(argv, config):
    """The first `--config.<path>=...` of argv whose path the config lacks, as a message."""
    from ml_collections import ConfigDict

    if config is None:
        return None
    for arg in argv[1:]:
        if not arg.startswith(("--config.", "--noconfig.")):
            continue
        path = arg.split("=", 1)[0].split("config.", 1)[1]
        node, walked = config, []
        for part in path.split("."):
            key = part.split("[", 1)[0]
            if not isinstance(node, ConfigDict):
                break
            if key not in node:
                close = difflib.get_close_matches(key, list(node.keys()), n=3)
                hint = f"; did you mean {' or '.join('.'.join(walked + [c]) for c in close)}?" if close else ""
                return f"{arg.split('=', 1)[0]}: the config has no field {'.'.join(walked + [key])!r}{hint}"
            node, walked = node[key], walked + [key]
    return None


def _config_of(argv):
    """The config that --config names in argv, loaded without its overrides (None if it fails)."""
    for i, arg in enumerate(argv):
        path = arg.split("=", 1)[1] if arg.startswith("--config=") else (
            argv[i + 1] if arg == "--config" and i + 1 < len(argv) else None)
        if path:
            try:
                return FLAGS["config"].parser.parse(path)
            except Exception:  # only used to word an error message
                return None
    return None


def parse_flags(argv):
    """absl's flag parsing, with every command-line mistake reported in one line + exit code 2.

    absl exits 1 on bad flags, and ml_collections raises a bare AttributeError (a traceback)
    for an override of a field the config does not have.
    """
    try:
        return FLAGS(argv)
    except flags.Error as e:
        message = str(e)
    except (AttributeError, KeyError) as e:
        message = _unknown_override(argv, _config_of(argv)) or f"bad --config override: {e}"
    print(f"error (usage): {message}\nPass --helpfull to see the flags.", file=sys.stderr)
    sys.exit(2)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}", exitcode=2)
    config = apply_aliases(FLAGS.config)
    module = importlib.import_module(f"pds_jax.modes.{FLAGS.mode}")
    kwargs = {}
    if FLAGS.eval_folder:
        # Every mode that writes a per-run output folder takes it as `run(..., folder=...)`.
        if "folder" not in inspect.signature(module.run).parameters:
            raise app.UsageError(f"--eval_folder names a run's output folder; --mode={FLAGS.mode} writes "
                                 "none (it has no effect there)", exitcode=2)
        kwargs["folder"] = FLAGS.eval_folder
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
    app.run(main, flags_parser=parse_flags)
