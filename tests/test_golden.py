"""Behaviour pins: fixed-key outputs recorded before the restructuring must not change.

`tests/data/golden.npz` holds uint8 samples of `--mode=sample` on the embedded default
(PC vanilla, PDS α = 5, annealed Langevin + PDS, ODE Heun, DEIS tAB3 and iPNDM; 4 samples,
a few steps each) and float outputs of the samplers on the Gaussian oracle (VE and VP).
See `tests/golden/settings.py` for the settings and how to re-record after an intended
change of the numbers.
"""

import os

import numpy as np
import pytest

from tests.golden import settings

GOLDEN = os.path.join(settings.ROOT, "tests", "data", "golden.npz")


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name", sorted(settings.CLI_SETTINGS))
def test_cli_samples_unchanged(golden, name):
    got = settings.cli_samples(name)
    assert got.dtype == np.uint8 and got.shape == golden[name].shape
    np.testing.assert_array_equal(got, golden[name], err_msg=f"{name}: CLI samples changed")


def test_api_outputs_unchanged(golden):
    got = settings.api_outputs()
    assert set(got) == {k for k in golden if k.startswith("api_")}
    for name, value in got.items():
        np.testing.assert_allclose(value, golden[name], rtol=0, atol=1e-6 * max(1.0, np.abs(golden[name]).max()),
                                   err_msg=f"{name}: API output changed")
