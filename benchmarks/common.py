"""Plumbing shared by the speed benchmarks (step_cost, loop_overhead, paper_timing).

The measuring itself lives in `pds_jax.timing` (the CLI's benchmark mode uses it
too); this module holds what only the scripts need:

* `add_common_flags` / `setup_jax`: --out, --overwrite, --repeats, --budget-s,
  --workers, --matmul-precision, --set KEY=VALUE config overrides;
* `output_paths` and `ResultWriter`: JSON + PNG next to each other, default
  `benchmarks/results/<name>_<platform>.json`, never overwriting an existing result
  (a free name `<name>_<platform>_1.json`, ... is taken instead unless --overwrite);
  the JSON is rewritten atomically after every finished case, so a run that is
  killed (or runs out of --budget-s) still leaves valid JSON with `"complete": false`;
* `header`: what every result file starts with (device, versions, precision, argv);
* `load_config`, `Budget`, `format_table`, `ms`.

All three at the paper's sizes on one GPU, in about 4.5 minutes on an H100 (each
script capped by `timeout`; step_cost and paper_timing share compiled programs through
the persistent compilation cache), from the repository root:

    export JAX_COMPILATION_CACHE_DIR=/tmp/pds_jax_jit_cache PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
    OUT=${OUT:-benchmarks/results}
    timeout 135 python3 benchmarks/paper_timing.py --preset=paper --out $OUT/paper_timing_gpu.json
    timeout 120 python3 benchmarks/step_cost.py --preset=paper --out $OUT/step_cost_gpu.json
    timeout 75 python3 benchmarks/loop_overhead.py --preset=gpu --out $OUT/loop_overhead_gpu.json
"""

from __future__ import annotations

import argparse
import ast
import io
import datetime
import importlib
import importlib.util
import os
import sys
import time
from typing import List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
if ROOT not in sys.path:  # run as `python benchmarks/<script>.py` from a checkout
    sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jaxlib  # noqa: E402

from pds_jax import io_utils, models, timing  # noqa: E402
from pds_jax.provenance import device_info  # noqa: E402
from pds_jax.sde import get_sde  # noqa: E402

SCHEMA_VERSION = 1


# --------------------------------------------------------------------------- #
# Flags and JAX setup.
# --------------------------------------------------------------------------- #

def add_common_flags(parser: argparse.ArgumentParser, repeats: int, budget_s: float) -> None:
    parser.add_argument("--out", default="",
                        help="result JSON path (the PNG goes next to it); default "
                             "benchmarks/results/<name>_<platform>.json, a free name if that exists")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed rounds per measurement")
    parser.add_argument("--budget-s", type=float, default=budget_s,
                        help="skip the cases that would start after this many seconds (they are "
                             "listed as skipped in the JSON); 0 = no limit")
    parser.add_argument("--workers", type=int, default=4,
                        help="programs compiled at a time (threads) after the first of each network")
    parser.add_argument("--matmul-precision", default="default",
                        choices=["default", "high", "highest", "float32", "tensorfloat32", "bfloat16"],
                        help="jax_default_matmul_precision; 'default' lets GPUs use TF32 for float32 "
                             "convolutions and matmuls")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for every network, e.g. model.nf=4 'model.ch_mult=(1,2)'")


def apply_preset(args: argparse.Namespace, presets: dict) -> argparse.Namespace:
    """Fill every flag left unset (None) from `presets[args.preset]`."""
    for key, value in presets[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def setup_jax(args) -> None:
    if args.matmul_precision != "default":
        jax.config.update("jax_default_matmul_precision", args.matmul_precision)


def precision_info() -> dict:
    value = jax.config.jax_default_matmul_precision
    platform = jax.devices()[0].platform
    if value is None:
        note = ("XLA default precision: float32 convolutions and matmuls may use TF32 tensor cores "
                "on NVIDIA Ampere/Hopper GPUs" if platform == "gpu" else "XLA default precision (float32)")
    else:
        note = f"jax_default_matmul_precision={value}"
    return {"dtype": "float32", "default_matmul_precision": value or "default",
            "tf32_allowed": bool(platform == "gpu" and value in (None, "default", "tensorfloat32")),
            "note": note}


def header(name: str, argv: Sequence[str], settings: dict) -> dict:
    """The head of every result file."""
    device = device_info()
    device.pop("host", None)
    device["jaxlib"] = jaxlib.__version__
    device["cpu_count"] = os.cpu_count()
    return {
        "benchmark": name,
        "schema_version": SCHEMA_VERSION,
        "complete": False,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "argv": list(argv),
        "device": device,
        "precision": precision_info(),
        "compilation_cache_dir": jax.config.jax_compilation_cache_dir or None,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "settings": settings,
    }


# --------------------------------------------------------------------------- #
# Output files.
# --------------------------------------------------------------------------- #

def output_paths(out: str, name: str, overwrite: bool = False) -> Tuple[str, str]:
    """(json, png) paths: `out` or the default; a free `_<k>` name if it exists."""
    path = out or os.path.join(RESULTS, f"{name}_{jax.devices()[0].platform}.json")
    stem, ext = os.path.splitext(path)
    ext = ext or ".json"
    if not overwrite:
        stem = io_utils.free_stem(stem, (ext, ".png"))
    return stem + ext, stem + ".png"


class ResultWriter:
    """Writes one result JSON (and its PNG) atomically, as often as it is updated."""

    def __init__(self, json_path: str, png_path: str):
        self.json_path, self.png_path = json_path, png_path

    def write(self, result: dict, image=None) -> None:
        io_utils.atomic_write_json(self.json_path, result, overwrite=True)
        if image is not None:
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            io_utils.atomic_write_bytes(self.png_path, buf.getvalue(), overwrite=True)


# --------------------------------------------------------------------------- #
# Configs, budget, tables.
# --------------------------------------------------------------------------- #

def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def load_config(name: str, overrides: Sequence[str] = ()):
    """`get_config()` of `configs/<name>.py` (name like 've/bedroom_ncsnpp_continuous', a
    path 'configs/ve/x.py', or any config file elsewhere), with `KEY=VALUE` overrides (values parsed as Python literals)."""
    if name.endswith(".py") and os.path.isfile(name) and not _inside(name, os.path.join(ROOT, "configs")):
        spec = importlib.util.spec_from_file_location("_benchmark_config", name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config()
    else:
        module_name = (name[:-3] if name.endswith(".py") else name).replace(os.sep, "/")
        if os.path.isabs(module_name):
            module_name = os.path.relpath(module_name, ROOT).replace(os.sep, "/")
        if module_name.startswith("configs/"):
            module_name = module_name[len("configs/"):]
        config = importlib.import_module("configs." + module_name.replace("/", ".")).get_config()
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        *parents, leaf = key.strip().split(".")
        node = config
        for part in parents:
            node = getattr(node, part)
        if leaf not in node:
            raise ValueError(f"--set {key}: the config has no key {key!r}")
        setattr(node, leaf, _parse_value(value.strip()))
    return config


def _inside(path: str, folder: str) -> bool:
    return os.path.abspath(path).startswith(os.path.abspath(folder) + os.sep)


class Budget:
    """Wall-clock budget of a script; 0 or less means no limit."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds or 0)
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def exhausted(self) -> bool:
        return self.seconds > 0 and self.elapsed() >= self.seconds

    def reason(self) -> str:
        return f"time budget: {self.elapsed():.0f} s of --budget-s={self.seconds:g} used before this case started"


def ms(seconds: Optional[float], digits: int = 3) -> str:
    return "-" if seconds is None else f"{1e3 * seconds:.{digits}g}"


def format_table(headers: Sequence[str], rows: List[Sequence]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < 600 else text[:600] + " ..."


def random_network(name: str, overrides: Sequence[str], batch: int) -> dict:
    """What the timing benchmarks need of one config with random weights (the speed of a
    step does not depend on them): config, batch shape, sde, params, score_fn, a PDS
    preconditioner with the cost of real filters, and the config's PC sampler settings."""
    config = load_config(name, overrides)
    shape = (batch, config.data.image_size, config.data.image_size, config.data.num_channels)
    sde = get_sde(config)
    params = timing.random_params(config)
    score_fn = models.get_score_fn(sde, models.create_model(config), params, continuous=config.training.continuous)
    return {"config": config, "shape": shape, "sde": sde, "params": params, "score_fn": score_fn,
            "precond": timing.timing_preconditioner(shape[1:]), "sampler_kwargs": timing.pc_sampler_kwargs(config)}


def finish(result: dict, writer: "ResultWriter", budget: "Budget", image, text: str, json_path: str,
           png_path: str) -> dict:
    """Mark a benchmark's result complete, write its JSON and PNG, print its table."""
    result["complete"] = True
    result["total_s"] = round(budget.elapsed(), 1)
    writer.write(result, image)
    print(text)
    print(f"wrote {json_path} and {png_path}")
    return result
