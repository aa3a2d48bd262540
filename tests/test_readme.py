"""The README's Python blocks run as written, and every `pds_jax.<module>.<name>` it mentions exists.

The checkpoint block names score_sde's FFHQ checkpoint, which no package ships: where it is
not present, the block runs with the shipped Fashion-MNIST config and its image shape instead
(the only two substitutions), so every call in it is still exercised.
"""

import importlib
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def _run(code: str, name: str) -> dict:
    namespace = {"__name__": f"readme_{name}"}
    exec(compile(code, f"README.md ({name})", "exec"), namespace)
    return namespace


def test_the_readme_has_the_two_api_blocks():
    assert len(BLOCKS) == 2 and "GaussianOracle" in BLOCKS[0] and "load_score_model" in BLOCKS[1]


def test_oracle_block_runs_verbatim():
    ns = _run(BLOCKS[0], "oracle block")
    assert ns["samples"].shape == (16, 32, 32, 3) and int(ns["nfe"]) == 200


def test_checkpoint_block_runs_on_the_shipped_model_if_ffhq_is_absent(capsys):
    from pds_jax import resources
    from pds_jax.configs.ffhq_pds import get_config

    code = BLOCKS[1]
    try:
        resources.resolve(get_config().sampling.checkpoint)
    except (FileNotFoundError, ValueError):
        for old, new in (("pds_jax.configs.ffhq_pds", "pds_jax.configs.fashion_mnist_pds"),
                         ("(1, 1024, 1024, 3)", "(1, 32, 32, 1)")):
            assert old in code, f"the README checkpoint block no longer contains {old!r}; update this test"
            code = code.replace(old, new)
    ns = _run(code, "checkpoint block")
    assert ns["x"].shape == (1, 32, 32, 1) and int(ns["nfe"]) == 2 * ns["sampler"].num_steps
    assert "pc" in capsys.readouterr().out


@pytest.mark.parametrize("dotted", sorted(set(re.findall(r"`?(pds_jax(?:\.[a-z_]\w*)+)", README))))
def test_dotted_names_in_the_readme_resolve_after_import_pds_jax(dotted):
    import pds_jax

    parts = dotted.split(".")
    assert getattr(pds_jax, parts[1]) is not None  # reachable from a bare `import pds_jax`
    for k in range(len(parts), 0, -1):  # the longest importable module, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ModuleNotFoundError:
            continue
        for part in parts[k:]:
            obj = getattr(obj, part)
        return
    raise AssertionError(f"{dotted} does not resolve")
