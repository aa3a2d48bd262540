"""score_sde checkpoint files: read, check against a config, write, resume."""

import os

import jax
import numpy as np
import pytest
from flax import serialization
from flax.traverse_util import flatten_dict, unflatten_dict

from pds_jax import checkpoints as ckpt
from pds_jax.io_utils import OutputExistsError
from tests.model_helpers import random_params, tiny_config


@pytest.fixture(scope="module")
def params():
    return random_params(tiny_config(), seed=0)


def _state(params, step=7):
    """A score_sde-layout state with distinct, recognisable trees."""
    ema = jax.tree.map(lambda p: p + 1.0, params)
    mu = jax.tree.map(lambda p: 0.1 * p, params)
    nu = jax.tree.map(lambda p: p * p, params)
    return ckpt.make_score_sde_state(step=step, params=params, params_ema=ema, adam_mu=mu, adam_nu=nu,
                                     adam_count=np.int32(step), lr=2e-4, ema_rate=0.999,
                                     rng=np.asarray(jax.random.PRNGKey(step)))


def _assert_trees_equal(a, b):
    fa, fb = flatten_dict(a), flatten_dict(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=str(k))


def test_state_layout_is_score_sdes(params):
    state = _state(params)
    assert set(state) == {"step", "optimizer", "lr", "model_state", "ema_rate", "params_ema", "rng"}
    assert set(state["optimizer"]) == {"target", "state"}
    assert set(state["optimizer"]["state"]) == {"step", "param_states"}
    leaf = state["optimizer"]["state"]["param_states"]["Conv_0"]["kernel"]
    assert set(leaf) == {"grad_ema", "grad_sq_ema"}
    assert state["model_state"] == {}


def test_save_load_round_trip_is_exact(tmp_path, params):
    state = _state(params)
    path = ckpt.save_checkpoint(str(tmp_path), state, step=7)
    assert os.path.basename(path) == "checkpoint_7"
    loaded = ckpt.load_score_sde(path)
    _assert_trees_equal(loaded, state)
    assert loaded["step"] == 7 and loaded["lr"] == 2e-4 and loaded["ema_rate"] == 0.999
    mu, nu, count = ckpt.adam_moments_from_state(loaded)
    _assert_trees_equal(mu, jax.tree.map(lambda p: 0.1 * p, params))
    _assert_trees_equal(nu, jax.tree.map(lambda p: p * p, params))
    assert count == 7
    _assert_trees_equal(ckpt.load_params(path), state["params_ema"])
    _assert_trees_equal(ckpt.load_params(path, ema=False), params)
    # flax's own reader (what score_sde used) reads our file as the same dict.
    from flax.training import checkpoints as flax_checkpoints
    _assert_trees_equal(flax_checkpoints.restore_checkpoint(path, target=None), state)


def test_folder_gives_latest_and_ignores_temp_files(tmp_path, params):
    for step in (1, 12, 3):
        ckpt.save_checkpoint(str(tmp_path), _state(params, step), step=step)
    (tmp_path / "checkpoint_99tmp").write_bytes(b"partial")          # flax's temp name
    (tmp_path / ".checkpoint_50.abc.tmp").write_bytes(b"partial")    # ours
    (tmp_path / "checkpoint_7.orig").write_bytes(b"other")
    assert [s for s, _ in ckpt.list_checkpoints(str(tmp_path))] == [1, 3, 12]
    assert ckpt.load_score_sde(str(tmp_path))["step"] == 12


def test_keep_prunes_and_overwrite_is_refused(tmp_path, params):
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(str(tmp_path), _state(params, step), step=step, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(str(tmp_path))] == [3, 4]
    with pytest.raises(OutputExistsError):
        ckpt.save_checkpoint(str(tmp_path), _state(params, 4), step=4)
    ckpt.save_checkpoint(str(tmp_path), _state(params, 9), step=4, overwrite=True)
    assert ckpt.load_score_sde(str(tmp_path))["step"] == 9
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_3", "checkpoint_4"]  # no temp files left


def test_missing_paths_say_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint_<n>"):
        ckpt.load_params(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=r"no `checkpoint_<n>` file"):
        ckpt.load_params(str(tmp_path))
    (tmp_path / "checkpoint_1").write_bytes(b"\x00not msgpack at all")
    with pytest.raises(ValueError, match="checkpoint_1"):
        ckpt.load_params(str(tmp_path))


def test_check_params_accepts_the_right_config(params):
    ckpt.check_params(params, tiny_config())


def test_check_params_lists_mismatching_paths(tmp_path, params):
    path = ckpt.save_checkpoint(str(tmp_path), _state(params), step=1)
    other = tiny_config(progressive="output_skip", progressive_input="input_skip", nf=8)
    with pytest.raises(ckpt.CheckpointMismatchError) as info:
        ckpt.check_params(ckpt.load_params(path), other, checkpoint=path,
                          config_name="ve/bedroom_ncsnpp_continuous (tiny)", max_listed=1000)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert path in message and "ve/bedroom_ncsnpp_continuous (tiny)" in message
    assert "missing from the checkpoint" in message and "Combine_0/Conv_0/kernel" in message
    assert "unexpected in the checkpoint" in message and "Downsample_0/Conv2d_0/weight" in message
    assert "mis-shaped" in message and "Conv_0/kernel: (3, 3, 3, 4) vs (3, 3, 3, 8)" in message


def test_legacy_group_norm_params_load(tmp_path, params):
    """Files written with flax <= 0.3.5 store GroupNorm scale/bias as (1, 1, 1, C)."""
    flat = flatten_dict(params)
    legacy = {k: (v.reshape(1, 1, 1, -1) if k[-2].startswith("GroupNorm_") else v) for k, v in flat.items()}
    assert any(v.ndim == 4 and k[-1] == "scale" for k, v in legacy.items())
    state = _state(params)
    state["params_ema"] = unflatten_dict(legacy)
    path = tmp_path / "checkpoint_3"
    path.write_bytes(serialization.msgpack_serialize(state))   # as an old score_sde run would
    loaded = ckpt.load_params(str(path))
    _assert_trees_equal(loaded, params)
    ckpt.check_params(loaded, tiny_config())
    # Only GroupNorm leaves are reshaped (NCSNv2's InstanceNorm++ params are 4-D by design).
    other = {"InstanceNorm2dPlus_0": {"gamma": np.ones((1, 1, 1, 4), np.float32)}}
    assert ckpt.fix_legacy_group_norm(other)["InstanceNorm2dPlus_0"]["gamma"].shape == (1, 1, 1, 4)
