"""Fixed-key outputs that a refactor must not change (uint8-equal CLI samples, float API arrays).

`record(path)` recomputes every entry and writes them to `path`; `tests/test_golden.py`
recomputes them and compares with the committed `tests/data/golden.npz`. The file was
recorded before the "one way through the code" restructuring, so a difference means a
change of behaviour. Regenerate it only when a change of the numbers is intended:

    python -m tests.golden.settings tests/data/golden.npz

CLI entries run `pds_jax.modes.sample.run` (what `main.py --mode=sample` calls) on the
embedded default model with 4 samples and a few steps; API entries run the samplers on
the Gaussian oracle.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# name -> config overrides of configs/fashion_mnist_pds.py (dotted paths)
NO_FILTERS = {"sampling.pds.freq_filter": "", "sampling.pds.space_filter": ""}
CLI_SETTINGS = {
    "cli_pc_vanilla": dict(NO_FILTERS, **{"sampling.pds.speed_up": 25.0}),
    "cli_pc_pds_alpha5": {"sampling.pds.speed_up": 25.0, "sampling.pds.alpha": 5.0},
    "cli_ald_pds_alpha5": {"sampling.pds.speed_up": 25.0, "sampling.pds.alpha": 5.0,
                           "sampling.corrector": "ald", "sampling.snr": 0.05},
    "cli_ode_heun": dict(NO_FILTERS, **{"sampling.method": "ode", "sampling.ode.solver": "heun",
                                        "sampling.ode.num_steps": 4}),
    "cli_deis_tab3": dict(NO_FILTERS, **{"sampling.method": "deis", "sampling.deis.method": "tab",
                                         "sampling.deis.order": 3, "sampling.deis.num_steps": 5}),
    "cli_deis_ipndm": dict(NO_FILTERS, **{"sampling.method": "deis", "sampling.deis.method": "ipndm",
                                          "sampling.deis.num_steps": 5}),
}


def cli_config(name: str):
    sys.path.insert(0, ROOT) if ROOT not in sys.path else None
    from configs.fashion_mnist_pds import get_config

    config = get_config()
    config.sampling.batch_size = 4
    config.sampling.num_samples = 4
    config.sampling.seed = 3
    for path, value in CLI_SETTINGS[name].items():
        node = config
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def cli_samples(name: str) -> np.ndarray:
    """uint8 (4, 32, 32, 1) samples of `main.py --mode=sample` for setting `name`."""
    from pds_jax.modes import sample

    with tempfile.TemporaryDirectory() as workdir:
        report = sample.run(cli_config(name), workdir)
        with np.load(os.path.join(report["output_dir"], "samples.npz")) as z:
            return z["images"]


def api_outputs() -> dict:
    """Float outputs of the samplers on the Gaussian oracle (16×16×1, 1/f² spectrum)."""
    import jax

    from pds_jax.oracles import GaussianOracle
    from pds_jax.precond import Preconditioner
    from pds_jax.samplers import get_pc_sampler
    from pds_jax.samplers.deis import get_deis_sampler
    from pds_jax.samplers.ode import get_ode_sampler
    from pds_jax.sde import VESDE, VPSDE

    oracle = GaussianOracle.natural_image((16, 16, 1))
    R, A = oracle.filter_statistics()
    precond = Preconditioner.from_arrays(freq=R, space=A, alpha=5.0)
    shape = (8, 16, 16, 1)
    key = jax.random.PRNGKey(7)
    out = {}
    # Every entry must be finite: a NaN pin compares equal to any NaN and pins nothing.
    for sde_name, sde in (("ve", VESDE(0.01, 50.0, 1000)), ("vp", VPSDE(0.1, 20.0, 1000))):
        score = oracle.score_fn(sde)
        for label, p in (("vanilla", None), ("pds", precond)):
            # VP's DDPM discretisation needs N >~ 20 (β_i = β(t)/N < 1), so VP runs 100 steps.
            sampler = get_pc_sampler(sde, shape, snr=0.16, precond=p, speed_up=100 if sde_name == "ve" else 10)
            out[f"api_pc_{sde_name}_{label}"] = np.asarray(sampler(key, score)[0])
        out[f"api_ode_heun_{sde_name}"] = np.asarray(
            get_ode_sampler(sde, shape, method="heun", num_steps=6)(key, score)[0])
        x, nfe = get_ode_sampler(sde, shape, method="adaptive", rtol=1e-4, atol=1e-4)(key, score)
        out[f"api_ode_adaptive_{sde_name}"] = np.asarray(x)
        out[f"api_ode_adaptive_{sde_name}_nfe"] = np.asarray(nfe)
        for method, order in (("tab", 3), ("ipndm", 3), ("rhoab", 2), ("rhork", 2)):
            out[f"api_deis_{method}{order}_{sde_name}"] = np.asarray(
                get_deis_sampler(sde, shape, 6, method=method, order=order)(key, score)[0])
    return out


def record(path: str) -> None:
    arrays = {name: cli_samples(name) for name in CLI_SETTINGS}
    arrays.update(api_outputs())
    bad = [k for k, v in arrays.items() if not np.all(np.isfinite(v))]
    if bad:
        raise ValueError(f"golden entries {bad} are not finite; pick settings that sample")
    np.savez_compressed(path, **arrays)
    print(f"wrote {len(arrays)} golden arrays to {path}")


if __name__ == "__main__":
    record(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "data", "golden.npz"))
