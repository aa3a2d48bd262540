"""Regenerate `ncsnpp_tiny_reference.npz` by running score_sde's *original* NCSN++.

The fixture pins "same parameter tree, same scores as score_sde" for tiny configs that
together cover every NCSN++ switch. For each case it stores the original model's
parameters (its `init` with PRNGKey(0), plus deterministic noise so that the
zero-initialised output convs matter) as one flat float32 vector with the paths and
shapes, in the original creation order, in the JSON `meta`, a batch of inputs and noise labels, the
original forward output (train=False), and a SHA-256 of the original `init` values
(creation order and initialisers decide them). One more case runs score_sde's
original DDPM network with `pattern_params` (its GroupNorm(32) layers make stored
parameters too large); only its inputs, outputs and tree are stored.

Usage (nothing from score_sde is copied into this repository):

    git clone https://github.com/yang-song/score_sde /tmp/score_sde_ref   # commit 0acb9e0
    # flax.optim is gone: in models/utils.py change the annotation
    #   `optimizer: flax.optim.Optimizer` -> `optimizer: Any`
    python -m tests.data.make_ncsnpp_reference --score_sde=/tmp/score_sde_ref

run from the repository root.
"""

import argparse
import hashlib
import importlib
import json
import os
import sys

import numpy as np

CASES = {
    # LSUN/FFHQ-style NCSN++: FIR, BigGAN blocks, output_skip + input_skip, Fourier, scale_by_sigma.
    "ncsnpp_output_skip": dict(progressive="output_skip", progressive_input="input_skip"),
    # CIFAR-10 NCSN++: progressive_input residual.
    "ncsnpp_residual_input": dict(),
    # DDPM++: no FIR, no progressive paths, positional embedding, centred data, no σ scaling.
    "ddpmpp": dict(fir=False, progressive_input="none", embedding_type="positional",
                   scale_by_sigma=False, centered=True),
    # DDPM blocks with Down/Upsample modules, residual output pyramid, cat combine, unconditional.
    "ddpm_blocks_cat": dict(resblock_type="ddpm", fir=False, progressive="residual",
                            progressive_input="input_skip", progressive_combine="cat",
                            embedding_type="positional", conditional=False, skip_rescale=False,
                            init_scale=0.5),
    # DDPM blocks with FIR resampling without convs, residual both ways.
    "ddpm_blocks_fir": dict(resblock_type="ddpm", progressive="residual", progressive_input="residual",
                            progressive_combine="cat", resamp_with_conv=False, centered=True),
}
# The original DDPM network (models/ddpm.py): GroupNorm(32) needs nf >= 32, which makes
# stored parameters too large for the fixture, so it uses `pattern_params` instead.
DDPM_CASE = dict(nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0)
DDPM_IMAGE_SIZE = 8
TINY = dict(nf=4, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.0)
IMAGE_SIZE = 16
BATCH = 2


def make_config(get_config, overrides):
    """`get_config()` of ve/cifar10_ncsnpp_continuous, shrunk and with `overrides` applied."""
    config = get_config()
    config.data.image_size = IMAGE_SIZE
    for key, value in {**TINY, **overrides}.items():
        if key == "centered":
            config.data.centered = value
        else:
            setattr(config.model, key, value)
    return config


def labels_for(config):
    if config.model.embedding_type == "fourier":
        return np.array([0.02, 30.0], np.float32)   # σ values
    return np.array([3.0, 871.5], np.float32)        # (fractional) timesteps


def pattern_params(flat_shapes):
    """Deterministic, platform-independent parameters: 0.1 sin(0.731 n + 1.3 i), leaf i in sorted order."""
    out = {}
    for i, (path, shape) in enumerate(sorted(flat_shapes)):
        n = int(np.prod(shape))
        values = 0.1 * np.sin(np.arange(n, dtype=np.float64) * 0.731 + 1.3 * i)
        out[path] = values.astype(np.float32).reshape(shape)
    return out


def params_digest(flat):
    h = hashlib.sha256()
    for key in sorted(flat):
        h.update(key.encode())
        h.update(np.ascontiguousarray(flat[key], dtype=np.float32).tobytes())
    return h.hexdigest()


FULL_SIZE = ["vp/ddpm/cifar10", "ve/cifar10_ncsnpp_continuous", "ve/cifar10_ncsnpp_deep_continuous",
             "ve/bedroom_ncsnpp_continuous", "ve/church_ncsnpp_continuous",
             "ve/celebahq_256_ncsnpp_continuous", "ve/ffhq_256_ncsnpp_continuous",
             "vp/cifar10_ddpmpp_continuous"]
# score_sde's ve/ffhq_ncsnpp_continuous.py needs torch and does not run in the JAX code;
# its architecture is the bedroom one with these values (from the PyTorch port).
FFHQ_1024 = dict(nf=16, ch_mult=(1, 2, 4, 8, 16, 32, 32, 32), num_res_blocks=1, sigma_max=1348.0)


def tree_digest(flat_shapes):
    """SHA-256 of the `path:shape` lines of a parameter tree (eval_shape sorts the paths)."""
    lines = "\n".join(f"{k}:{tuple(v)}" for k, v in flat_shapes)
    return hashlib.sha256(lines.encode()).hexdigest()


def full_size_trees(ref_ncsnpp, ref_ddpm):
    """Count, leaf count and tree digest of the original full-size models."""
    import jax
    import jax.numpy as jnp
    from flax.traverse_util import flatten_dict
    out = {}
    for name in FULL_SIZE + ["ve/ffhq_ncsnpp_continuous"]:
        if name == "ve/ffhq_ncsnpp_continuous":
            config = importlib.import_module("configs.ve.bedroom_ncsnpp_continuous").get_config()
            config.data.image_size = 1024
            for key, value in FFHQ_1024.items():
                setattr(config.model, key, value)
        else:
            config = importlib.import_module("configs." + name.replace("/", ".")).get_config()
        model = (ref_ddpm.DDPM if config.model.name == "ddpm" else ref_ncsnpp.NCSNpp)(config=config)
        size, channels = config.data.image_size, config.data.num_channels
        shapes = jax.eval_shape(lambda: model.init(
            {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)},
            jnp.zeros((1, size, size, channels)), jnp.ones((1,)), train=False)["params"])
        flat = [(k, v.shape) for k, v in flatten_dict(shapes, sep="/").items()]
        top = sorted({k.split("/")[0] for k, _ in flat})
        out[name] = dict(num_params=int(sum(np.prod(s) for _, s in flat)), num_leaves=len(flat),
                         tree_sha256=tree_digest(flat), top_level_modules=top)
        print(name, out[name]["num_params"], len(flat))
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--score_sde", required=True, help="checkout of yang-song/score_sde")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "ncsnpp_tiny_reference.npz"))
    parser.add_argument("--trees", default=os.path.join(os.path.dirname(__file__), "score_sde_param_trees.json"))
    args = parser.parse_args()
    sys.path.insert(0, args.score_sde)
    import flax
    import jax
    from flax.traverse_util import flatten_dict
    from pds_jax.io_utils import atomic_save_npz, atomic_write_json
    ref_ncsnpp = importlib.import_module("models.ncsnpp")
    ref_ddpm = importlib.import_module("models.ddpm")
    get_config = importlib.import_module("configs.ve.cifar10_ncsnpp_continuous").get_config

    arrays, cases = {}, {}
    for i, (name, overrides) in enumerate(CASES.items()):
        config = make_config(get_config, overrides)
        model = ref_ncsnpp.NCSNpp(config=config)
        x = np.asarray(jax.random.uniform(jax.random.PRNGKey(100 + i), (BATCH, IMAGE_SIZE, IMAGE_SIZE, 3)))
        labels = labels_for(config)
        rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
        init = flatten_dict(model.init(rngs, x, labels, train=False)["params"], sep="/")
        digest = params_digest({k: np.asarray(v) for k, v in init.items()})
        noise_key = jax.random.PRNGKey(7)
        params = {}
        for j, (path, value) in enumerate(init.items()):
            noise = jax.random.normal(jax.random.fold_in(noise_key, j), value.shape)
            params[path] = np.asarray(value + 0.05 * noise, np.float32)
        out = model.apply({"params": flax.traverse_util.unflatten_dict(params, sep="/")}, x, labels, train=False)
        # One flat vector per case (paths and shapes in `meta`) keeps the file small.
        arrays[f"{name}/params"] = np.concatenate([v.ravel() for v in params.values()])
        arrays[f"{name}/x"] = x
        arrays[f"{name}/labels"] = labels
        arrays[f"{name}/out"] = np.asarray(out)
        cases[name] = dict(overrides=overrides, init_sha256=digest,
                           param_shapes=[[k, list(v.shape)] for k, v in params.items()])
        print(name, len(params), "leaves", sum(v.size for v in params.values()), "floats")
    # The DDPM model, with pattern parameters (not stored).
    config = importlib.import_module("configs.vp.ddpm.cifar10").get_config()
    config.data.image_size = DDPM_IMAGE_SIZE
    for key, value in DDPM_CASE.items():
        setattr(config.model, key, value)
    model = ref_ddpm.DDPM(config=config)
    x = np.asarray(jax.random.uniform(jax.random.PRNGKey(99), (BATCH, DDPM_IMAGE_SIZE, DDPM_IMAGE_SIZE, 3)))
    labels = np.array([3, 871], np.int32)
    rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
    init = flatten_dict(model.init(rngs, x, labels, train=False)["params"], sep="/")
    params = pattern_params([(k, v.shape) for k, v in init.items()])
    out = model.apply({"params": flax.traverse_util.unflatten_dict(params, sep="/")}, x, labels, train=False)
    arrays.update({"ddpm/x": x, "ddpm/labels": labels, "ddpm/out": np.asarray(out)})
    ddpm_case = dict(base_config="vp/ddpm/cifar10", overrides=DDPM_CASE, image_size=DDPM_IMAGE_SIZE,
                     init_sha256=params_digest({k: np.asarray(v) for k, v in init.items()}),
                     param_shapes=[[k, list(v.shape)] for k, v in init.items()])
    print("ddpm", len(params), "leaves", sum(v.size for v in params.values()), "floats (pattern)")
    meta = dict(
        description=__doc__.split("\n\n")[0],
        score_sde_commit="0acb9e0 (yang-song/score_sde master), models/utils.py annotation patched",
        jax_version=jax.__version__, flax_version=flax.__version__,
        base_config="ve/cifar10_ncsnpp_continuous", tiny=TINY, image_size=IMAGE_SIZE, cases=cases,
        ddpm_case=ddpm_case)
    arrays["meta"] = np.array(json.dumps(meta, default=list))
    atomic_save_npz(args.out, arrays, overwrite=True)
    print("wrote", args.out, os.path.getsize(args.out), "bytes")
    trees = dict(description="Parameter trees of score_sde's original full-size NCSN++ models "
                             "(jax.eval_shape of its init); written by make_ncsnpp_reference.py",
                 score_sde_commit=meta["score_sde_commit"], configs=full_size_trees(ref_ncsnpp, ref_ddpm))
    atomic_write_json(args.trees, trees, overwrite=True)
    print("wrote", args.trees)


if __name__ == "__main__":
    main()
