"""Load an ml_collections config by file path or by the name of a config shipped in `pds_jax.configs`.

`--config` of the command line goes through `load_config`, which takes

* a path to a config file: `configs/ffhq_pds.py`, `/abs/path/my_config.py`;
* the name of a shipped config: `fashion_mnist_pds`, `ve/ffhq_ncsnpp_continuous` (the file
  `pds_jax/configs/<name>.py`); `configs/<name>.py` is also found there when no such file
  exists in the working directory, so the repository's documented commands work after
  `pip install` too;
* optionally `:<arg>` after either, passed to `get_config(<arg>)` (as ml_collections'
  `config_flags` does).

A config file defines `get_config()` returning a `ml_collections.ConfigDict`. Every mistake
(no such file or name, a folder, a syntax error, no `get_config`) raises `ConfigError`: one
line that names the file (and line) and the fix.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import sys
from typing import List, Tuple

_COUNTER = itertools.count()


class ConfigError(ValueError):
    """A --config value that names no loadable config (one-line message)."""


def configs_dir() -> str:
    """The folder of the shipped configs (`pds_jax/configs/`)."""
    from pds_jax import configs

    return os.path.dirname(os.path.abspath(configs.__file__))


def shipped_config_names() -> List[str]:
    """Names of the shipped config files that define `get_config` ('ve/ffhq_ncsnpp_continuous', ...)."""
    root, names = configs_dir(), []
    for folder, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(("_", ".")))
        for name in sorted(files):
            if not name.endswith(".py") or name.startswith("_"):
                continue
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                if "\ndef get_config(" not in f.read():
                    continue  # helpers: common.py, default_*_configs.py
            names.append(os.path.relpath(os.path.join(folder, name[:-3]), root).replace(os.sep, "/"))
    return sorted(names)


def _shipped_file(name: str) -> str:
    """`pds_jax/configs/<name>.py` for a name like 've/x', 'configs/ve/x.py' (None if absent)."""
    name = name.replace(os.sep, "/")
    name = name[len("configs/"):] if name.startswith("configs/") else name
    name = name[:-3] if name.endswith(".py") else name
    parts = name.split("/")
    if not name or any(p in ("", ".", "..") for p in parts):
        return None
    path = os.path.join(configs_dir(), *parts) + ".py"
    return path if os.path.isfile(path) else None


def find_config_file(spec: str) -> Tuple[str, Tuple[str, ...]]:
    """(config file, get_config arguments) that a --config value names; raises ConfigError."""
    spec = str(spec or "").strip()
    if not spec:
        raise ConfigError("no config given: pass --config=<file.py> or a shipped config name")
    path, colon, arg = spec.partition(":")
    if not os.path.exists(path) and os.path.exists(spec):  # a ':' inside a real file name
        path, colon, arg = spec, "", ""
    args = (arg,) if colon else ()
    if os.path.isdir(path):
        raise ConfigError(f"{path} is a folder; name a config file inside it (e.g. "
                          f"{os.path.join(path, 'fashion_mnist_pds.py')}) or a shipped config name")
    if os.path.isfile(path):
        return path, args
    shipped = _shipped_file(path)
    if shipped:
        return shipped, args
    raise ConfigError(f"{path}: no such config file and no shipped config of that name; pass a file path "
                      f"or one of the shipped configs: {', '.join(shipped_config_names())}")


def _exec_config_file(path: str):
    """The module of config file `path`, executed under a fresh name; ConfigError on a syntax error."""
    module_name = f"_pds_jax_config_{next(_COUNTER)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: not a Python file (config files end in .py)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # like an import: dataclasses and pickling can find it
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(module_name, None)
        where = f"{e.filename or path}:{e.lineno}" if e.lineno else (e.filename or path)
        raise ConfigError(f"{where}: syntax error in the config file: {e.msg}") from None
    except ImportError as e:
        sys.modules.pop(module_name, None)
        old_layout = (e.name or "").split(".")[0] == "configs"  # `from configs.x import ...` outside a checkout
        hint = ("; the shipped configs are the package pds_jax.configs (e.g. `from "
                "pds_jax.configs.fashion_mnist_pds import get_config`)") if old_layout else ""
        raise ConfigError(f"{path}: the config file's imports fail: {e}{hint}") from None
    return module


def load_config(spec: str, lock: bool = False):
    """The ConfigDict that a --config value names (file path or shipped name, see the module doc).

    `lock=True` locks it (`ConfigDict.lock()`: no new fields), as the command line does.
    Raises ConfigError (a ValueError) with a one-line message for every naming mistake.
    """
    path, args = find_config_file(spec)
    module = _exec_config_file(path)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ConfigError(f"{path}: defines no get_config() function (a config file defines "
                          "get_config() returning an ml_collections.ConfigDict)")
    config = get_config(*args)
    if config is None:
        raise ConfigError(f"{path}: get_config() returned None (missing `return config`?)")
    if lock and callable(getattr(config, "lock", None)):
        config.lock()
    return config
