"""pds_jax command line (score_sde style: absl flags + ml_collections configs).

  pds-jax --config=fashion_mnist_pds --workdir=runs/fm --mode=compare     # a shipped config, by name
  pds-jax --config=ffhq_pds --workdir=runs/ffhq                           # sample with PDS
  pds-jax --config=ffhq_pds --workdir=runs/ffhq --config.sampling.pds.speed_up=20
  pds-jax --config=my_config.py --workdir=runs/mine --mode=estimate       # a config file
  pds-jax --config=fashion_mnist_pds --workdir=runs/fm_train --mode=train

`pds-jax`, `python -m pds_jax` and, in a repository checkout, `python main.py` are the
same program. --config takes a file path or the name of a shipped config
(`pds_jax.config_loader`); --config.<field>=<value> overrides a field. The official PDS
flags are accepted as aliases: --speed_up, --alpha, --freq_mask_path, --space_mask_path
and --eval_folder (they set config.sampling.pds.* / the output folder).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys

import logging as python_logging

from absl import app, flags, logging
from ml_collections import config_flags

MODES = ("sample", "compare", "estimate", "train", "eval", "benchmark", "likelihood", "inpaint", "colorize")
# JAX probes for a TPU at start-up and logs "Unable to initialize backend 'tpu' ... libtpu.so"
# at INFO, which absl prints and which reads like an error on every CPU or GPU machine.
python_logging.getLogger("jax._src.xla_bridge").setLevel(python_logging.WARNING)

MULTIHOST_MODES = ("sample", "eval", "estimate", "train")  # the modes that run on JAX's multi-controller runtime
HELP_FLAGS = ("-h", "--help", "-help", "-?", "--helpshort", "--helpfull")


class ConfigSpecParser(flags.ArgumentParser):
    """--config's parser: `pds_jax.config_loader.load_config` (a file path or a shipped name), locked."""

    def parse(self, argument):
        from pds_jax.config_loader import load_config

        return load_config(argument, lock=True)

    def flag_type(self):
        return "config object"


class AlphaParser(flags.ArgumentParser):
    """--alpha's parser: a number > 1 or 'auto' (`pds_jax.alpha_rule.parse_alpha`)."""

    def parse(self, argument):
        from pds_jax.alpha_rule import parse_alpha

        return parse_alpha(argument)

    def flag_type(self):
        return "float > 1 or 'auto'"


FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "A config file (path/to/config.py) or the name of a shipped config (fashion_mnist_pds, "
    "ffhq_pds, ve/ffhq_ncsnpp_continuous, ...); its fields are overridden by --config.<field>=<value>.",
    lock_config=True)
# config_flags' own parser reads file paths only; the flag object (and its override
# handling) stays ml_collections', the loading goes through pds_jax's one config loader.
FLAGS["config"].parser = ConfigSpecParser()
flags.DEFINE_string("workdir", None, "Folder for this run's outputs (checkpoints, samples, filters).")
flags.DEFINE_enum("mode", "sample", MODES, "What to do.")
flags.DEFINE_string("eval_folder", None, "Name of the output subfolder of workdir (official PDS flag).")
flags.DEFINE_float("speed_up", None, "Alias of --config.sampling.pds.speed_up (official PDS flag).")
flags.DEFINE(AlphaParser(), "alpha", None, "Alias of --config.sampling.pds.alpha (official PDS flag): a number > 1, "
             "or 'auto' for the fitted α(N) rule.", serializer=flags.ArgumentSerializer())
flags.DEFINE_string("freq_mask_path", None, "Alias of --config.sampling.pds.freq_filter (official PDS flag).")
flags.DEFINE_string("space_mask_path", None, "Alias of --config.sampling.pds.space_filter (official PDS flag).")
flags.DEFINE_string("coordinator_address", None, "Multi-process runs: host:port of process 0's coordinator "
                    "(with --num_processes and --process_id; see pds_jax.distributed).")
flags.DEFINE_integer("num_processes", None, "Multi-process runs: the number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index in [0, --num_processes).")
flags.DEFINE_bool("print_config", False, "Print every field of --config with its value (after the "
                  "--config.<field> overrides and the aliases), one `field = value` per line, and exit; "
                  "no --workdir needed. --help --config=X prints them too.")
flags.DEFINE_bool("distributed", False, "Start JAX's multi-controller runtime, auto-detecting the cluster "
                  "(TPU pod slice, SLURM, Open MPI) unless the three flags above are given.")
flags.mark_flag_as_required("config")
# --workdir is required too, except with --print_config (which writes nothing)
flags.register_multi_flags_validator(
    ["workdir", "print_config"], lambda v: v["workdir"] is not None or v["print_config"],
    message="--workdir must be given (the folder for this run's outputs)")

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


def config_listing(config, prefix: str = "") -> list:
    """`field = value` lines of every leaf of a ConfigDict, in the config's order."""
    from ml_collections import ConfigDict

    lines = []
    for key, value in config.items():
        if isinstance(value, ConfigDict):
            lines += config_listing(value, f"{prefix}{key}.")
        else:
            lines.append(f"{prefix}{key} = {value!r}")
    return lines


def print_help(full: bool, config=None) -> None:
    """The usage text and the flags (all of them with `full`) on stdout; with `config`, its fields."""
    print(__doc__)
    print(FLAGS.get_help() if full else FLAGS.module_help(__name__))
    if config is not None:
        print("\nFields of --config (set any with --config.<field>=<value>):")
        print("\n".join("  " + line for line in config_listing(config)))
    elif not full:
        print("\nTry --helpfull to get a list of all flags (absl's included); --help --config=<config> "
              "or --print_config lists the config's fields with their values.")


def parse_flags(argv):
    """absl's flag parsing, with every command-line mistake reported in one line + exit code 2.

    absl exits 1 on bad flags and on --help, and ml_collections raises a bare AttributeError
    (a traceback) for an override of a field the config does not have. -h/--help/--helpfull
    print the help and exit 0, before any flag (even a required one) is checked.
    """
    args = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    asked = [a for a in args if a in HELP_FLAGS]
    if asked:
        print_help(full="--helpfull" in asked, config=_config_of(argv))
        sys.exit(0)
    try:
        return FLAGS(argv)
    except flags.Error as e:
        message = str(e)
    except (AttributeError, KeyError) as e:
        message = _unknown_override(argv, _config_of(argv)) or f"bad --config override: {e}"
    print(f"error (usage): {message}\nPass --helpfull to see the flags.", file=sys.stderr)
    sys.exit(2)


def start_distributed() -> None:
    """`pds_jax.distributed.initialize` from the flags (before any other JAX call); on processes
    other than 0, stdout is silenced after their one start-up line, so that only process 0
    prints (errors still go to stderr)."""
    from pds_jax import distributed

    requested = distributed.DistributedFlags(FLAGS.coordinator_address, FLAGS.num_processes,
                                             FLAGS.process_id, bool(FLAGS.distributed))
    if requested.requested and FLAGS.mode not in MULTIHOST_MODES:
        raise app.UsageError(f"--mode={FLAGS.mode} runs on one host only; the multi-process flags work with "
                             f"--mode={'|'.join(MULTIHOST_MODES)}", exitcode=2)
    try:
        started = distributed.initialize(requested)
    except ValueError as e:
        raise app.UsageError(str(e), exitcode=2)
    except RuntimeError as e:
        print(f"error (RuntimeError): {e}", file=sys.stderr)
        sys.exit(1)
    if started and not distributed.is_main():
        # fd 1 too: the C++ runtime (gloo, XLA) prints there as well.
        sys.stdout.flush()
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}", exitcode=2)
    if FLAGS.print_config:
        print("\n".join(config_listing(apply_aliases(FLAGS.config))))
        return
    start_distributed()
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
    except (FileNotFoundError, FileExistsError, ValueError, FloatingPointError) as e:
        # User-facing problems (missing checkpoint, bad config value, existing output):
        # one clear message, no traceback. Set --verbosity=1 for the traceback.
        if logging.get_verbosity() >= logging.DEBUG:
            raise
        print(f"error ({type(e).__name__}): {e}", file=sys.stderr)
        sys.exit(2)


def run(argv=None):
    """The console entry point (`pds-jax`, `python -m pds_jax`, `python main.py`)."""
    app.run(main, argv=argv, flags_parser=parse_flags)
