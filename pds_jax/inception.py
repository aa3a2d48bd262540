"""Inception-v3 in Flax, FID variant: the 2048-d pool3 features used by FID and KID.

The network is the one TensorFlow's original FID code froze in 2015
(`inception-2015-12-05.tgz`) as ported to PyTorch by pytorch-fid
(github.com/mseitzer/pytorch-fid, `src/pytorch_fid/inception.py`) on top of
torchvision's `Inception3` (`torchvision/models/inception.py`). The layer widths, the
parameter names and the preprocessing below were read from those two files; the code
is ours. The FID variant differs from torchvision's ImageNet Inception-v3 in three ways:

* the 3×3 average pools inside the Inception-A/C/E blocks ignore the zero padding
  (TensorFlow's `SAME` average pool = PyTorch `count_include_pad=False`);
* the pooling branch of the *last* E block (`Mixed_7c`) is a 3×3 **max** pool
  (a quirk of the 2015 graph that every FID implementation must reproduce);
* its head has 1008 classes — unused here, we stop at the global average pool.

Preprocessing (as pytorch-fid): NHWC images in [0, 1] are resized to 299×299 with
bilinear interpolation (half-pixel centres, i.e. `align_corners=False`, **no**
antialiasing), then mapped to [-1, 1] by x ↦ 2x − 1. Grayscale inputs are repeated
to three channels.

Weights: no package ships them (see docs/design.md §8). Convert pytorch-fid's
`pt_inception-2015-12-05-6726825d.pth` once with
`scripts/convert_fid_inception_weights.py` and pass the resulting `.npz` to
`load_inception_params`. The `.npz` is flat: keys are `/`-joined paths of the Flax
variables, e.g. `params/Mixed_5b/branch1x1/conv/kernel` (HWIO) and
`batch_stats/Mixed_5b/branch1x1/bn/mean`.
"""

from __future__ import annotations

import functools
import os
from typing import Dict, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flax import traverse_util

from pds_jax.io_utils import load_npz

FEATURE_DIM = 2048
INPUT_SIZE = 299
BN_EPSILON = 1e-3  # torchvision BasicConv2d: BatchNorm2d(eps=0.001), as TF's graph
WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               + WEIGHTS_FILENAME)

Padding = Tuple[Tuple[int, int], Tuple[int, int]]


def _pad(ph: int, pw: int) -> Padding:
    """PyTorch's symmetric `padding=(ph, pw)` in Flax's explicit form."""
    return ((ph, ph), (pw, pw))


class BasicConv2d(nn.Module):
    """conv (no bias) → BatchNorm (inference: running statistics, ε = 1e-3) → ReLU."""

    features: int
    kernel_size: Tuple[int, int]
    strides: Tuple[int, int] = (1, 1)
    padding: Padding = ((0, 0), (0, 0))

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(self.features, self.kernel_size, strides=self.strides,
                    padding=self.padding, use_bias=False, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3_same(x: jax.Array) -> jax.Array:
    # TF 'SAME' average pooling divides by the number of real (unpadded) pixels.
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=_pad(1, 1), count_include_pad=False)


def _max_pool_3x3_stride2(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
    """35×35 block (Mixed_5b/c/d): 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg-pool→1×1."""

    pool_features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = BasicConv2d(64, (1, 1), name="branch1x1")(x)
        b5 = BasicConv2d(48, (1, 1), name="branch5x5_1")(x)
        b5 = BasicConv2d(64, (5, 5), padding=_pad(2, 2), name="branch5x5_2")(b5)
        b3 = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = BasicConv2d(96, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_2")(b3)
        b3 = BasicConv2d(96, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_3")(b3)
        bp = BasicConv2d(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3_same(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Grid reduction 35→17 (Mixed_6a): 3×3/2 | 1×1→3×3→3×3/2 | max-pool/2."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = BasicConv2d(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
        bd = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv2d(96, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_2")(bd)
        bd = BasicConv2d(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionC(nn.Module):
    """17×17 block with factorised 7×7 convolutions (Mixed_6b..6e)."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c7 = self.channels_7x7
        row, col = _pad(0, 3), _pad(3, 0)  # (1,7) and (7,1) kernels keep the grid size
        b1 = BasicConv2d(192, (1, 1), name="branch1x1")(x)
        b7 = BasicConv2d(c7, (1, 1), name="branch7x7_1")(x)
        b7 = BasicConv2d(c7, (1, 7), padding=row, name="branch7x7_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=col, name="branch7x7_3")(b7)
        bd = BasicConv2d(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = BasicConv2d(c7, (7, 1), padding=col, name="branch7x7dbl_2")(bd)
        bd = BasicConv2d(c7, (1, 7), padding=row, name="branch7x7dbl_3")(bd)
        bd = BasicConv2d(c7, (7, 1), padding=col, name="branch7x7dbl_4")(bd)
        bd = BasicConv2d(192, (1, 7), padding=row, name="branch7x7dbl_5")(bd)
        bp = BasicConv2d(192, (1, 1), name="branch_pool")(_avg_pool_3x3_same(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Grid reduction 17→8 (Mixed_7a)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = BasicConv2d(192, (1, 1), name="branch3x3_1")(x)
        b3 = BasicConv2d(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
        b7 = BasicConv2d(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = BasicConv2d(192, (1, 7), padding=_pad(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=_pad(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv2d(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionE(nn.Module):
    """8×8 block with split 1×3 / 3×1 branches (Mixed_7b, Mixed_7c).

    `max_pool=True` reproduces the FID graph's last block, whose pooling branch is a
    3×3 max pool (padding never wins a max, so no count correction is needed).
    """

    max_pool: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = BasicConv2d(320, (1, 1), name="branch1x1")(x)
        b3 = BasicConv2d(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate([
            BasicConv2d(384, (1, 3), padding=_pad(0, 1), name="branch3x3_2a")(b3),
            BasicConv2d(384, (3, 1), padding=_pad(1, 0), name="branch3x3_2b")(b3)], axis=-1)
        bd = BasicConv2d(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv2d(384, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([
            BasicConv2d(384, (1, 3), padding=_pad(0, 1), name="branch3x3dbl_3a")(bd),
            BasicConv2d(384, (3, 1), padding=_pad(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
        if self.max_pool:
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=_pad(1, 1))
        else:
            pooled = _avg_pool_3x3_same(x)
        bp = BasicConv2d(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def resize_bilinear(images: jax.Array, size: int) -> jax.Array:
    """(B, H, W, C) → (B, size, size, C), bilinear, half-pixel centres, no antialias.

    Equals PyTorch's `F.interpolate(mode='bilinear', align_corners=False)` (what
    pytorch-fid uses): sample position (i + ½)·H/size − ½, clamped to the image.
    """
    b, h, w, c = images.shape
    if (h, w) == (size, size):
        return images
    return jax.image.resize(images, (b, size, size, c), method="bilinear", antialias=False)


def preprocess(images: jax.Array, size: Optional[int] = INPUT_SIZE) -> jax.Array:
    """NHWC in [0, 1] with 1 or 3 channels → NHWC RGB in [-1, 1] at `size`×`size`."""
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"Inception expects NHWC images with 1 or 3 channels, got shape {images.shape}; "
            "add a channel axis (x[..., None]) for grayscale arrays")
    x = images.astype(jnp.float32)
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)  # grayscale → RGB, as pytorch-fid's image loader
    if size is not None:
        x = resize_bilinear(x, size)
    return 2.0 * x - 1.0


class InceptionV3(nn.Module):
    """FID Inception-v3 trunk: images NHWC in [0, 1] → pool3 features (B, 2048).

    `resize_to=None` skips the resize (the trunk needs inputs of at least 75×75);
    comparable FIDs need the default 299.
    """

    resize_to: Optional[int] = INPUT_SIZE

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = preprocess(images, self.resize_to)
        x = BasicConv2d(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)   # 149
        x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)                     # 147
        x = BasicConv2d(64, (3, 3), padding=_pad(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_stride2(x)                                             # 73
        x = BasicConv2d(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)                    # 71
        x = _max_pool_3x3_stride2(x)                                             # 35
        x = InceptionA(32, name="Mixed_5b")(x)                                   # 256 ch
        x = InceptionA(64, name="Mixed_5c")(x)                                   # 288
        x = InceptionA(64, name="Mixed_5d")(x)                                   # 288
        x = InceptionB(name="Mixed_6a")(x)                                       # 17, 768
        x = InceptionC(128, name="Mixed_6b")(x)
        x = InceptionC(160, name="Mixed_6c")(x)
        x = InceptionC(160, name="Mixed_6d")(x)
        x = InceptionC(192, name="Mixed_6e")(x)
        x = InceptionD(name="Mixed_7a")(x)                                       # 8, 1280
        x = InceptionE(name="Mixed_7b")(x)                                       # 2048
        x = InceptionE(max_pool=True, name="Mixed_7c")(x)                        # 2048
        return jnp.mean(x, axis=(1, 2))                                          # pool3


# --------------------------------------------------------------------------- weights


def expected_shapes() -> Dict[str, Tuple[int, ...]]:
    """Flat key → shape of every variable the FID Inception needs (traced, no compute)."""
    return dict(_expected_shapes())


@functools.lru_cache(maxsize=1)
def _expected_shapes() -> Dict[str, Tuple[int, ...]]:
    model = InceptionV3(resize_to=None)
    # 75×75 is the smallest input the trunk accepts; the tree does not depend on it.
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                            jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32))
    return {"/".join(k): tuple(v.shape)
            for k, v in traverse_util.flatten_dict(shapes).items()}


def init_inception_params(seed: int = 0) -> Dict:
    """Random variables {'params', 'batch_stats'} with the FID tree (tests, smoke runs).

    Conv kernels are He-normal (std √(2 / fan_in)) so activations keep their scale
    through the ReLU stack; BatchNorm is the identity (scale 1, bias 0, mean 0, var 1).
    Drawn with NumPy: XLA takes ~30 s to compile `model.init` for this net on CPU.
    """
    rng = np.random.default_rng(seed)
    flat = {}
    for key, shape in expected_shapes().items():
        leaf = key.rsplit("/", 1)[-1]
        if leaf == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            flat[key] = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)
        else:
            fill = 1.0 if leaf in ("scale", "var") else 0.0
            flat[key] = np.full(shape, fill, np.float32)
    return unflatten_variables(flat)


def unflatten_variables(flat: Mapping[str, np.ndarray]) -> Dict:
    """{'params/Mixed_5b/.../kernel': array} → nested {'params': ..., 'batch_stats': ...}."""
    return traverse_util.unflatten_dict({tuple(k.split("/")): jnp.asarray(v)
                                         for k, v in flat.items()})


def flatten_variables(variables: Mapping) -> Dict[str, np.ndarray]:
    """{'params': ..., 'batch_stats': ...} → {'params/Mixed_5b/.../kernel': array}."""
    return {"/".join(k): np.asarray(v)
            for k, v in traverse_util.flatten_dict(dict(variables)).items()}


def _tree_mismatch(flat: Mapping[str, np.ndarray]) -> Tuple[list, list, list]:
    expected = expected_shapes()
    missing = sorted(set(expected) - set(flat))
    unexpected = sorted(set(flat) - set(expected))
    misshaped = sorted(f"{k}: got {tuple(np.shape(flat[k]))}, expected {expected[k]}"
                       for k in set(expected) & set(flat)
                       if tuple(np.shape(flat[k])) != expected[k])
    return missing, unexpected, misshaped


def _format_keys(title: str, keys: Sequence[str], limit: int = 20) -> str:
    shown = "\n    ".join(keys[:limit])
    more = f"\n    ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"  {title} ({len(keys)}):\n    {shown}{more}"


def validate_flat_variables(flat: Mapping[str, np.ndarray], source: str = "weights") -> None:
    """Raise ValueError listing missing / unexpected / mis-shaped keys, if any."""
    missing, unexpected, misshaped = _tree_mismatch(flat)
    if missing or unexpected or misshaped:
        parts = [f"{source} does not match the FID Inception-v3 tree:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected),
                            ("mis-shaped", misshaped)):
            if keys:
                parts.append(_format_keys(title, keys))
        parts.append(
            "Create the file with scripts/convert_fid_inception_weights.py from pytorch-fid's "
            f"{WEIGHTS_FILENAME} ({WEIGHTS_URL}).")
        raise ValueError("\n".join(parts))
    bad = sorted(k for k, v in flat.items() if not np.all(np.isfinite(v)))
    if bad:
        raise ValueError(f"{source}: non-finite values in " + ", ".join(bad[:10]))


def load_inception_params(path: str) -> Dict:
    """Read a converted `.npz` → {'params': ..., 'batch_stats': ...} for `InceptionV3`.

    The tree is validated key by key (see `validate_flat_variables`).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Inception weights file {path} not found. Download {WEIGHTS_URL} and convert it "
            "once with `python scripts/convert_fid_inception_weights.py "
            f"{WEIGHTS_FILENAME} fid_inception.npz` (needs PyTorch only for that step).")
    flat = {k: np.asarray(v, dtype=np.float32) for k, v in load_npz(
        path, "Inception weights file", fix=f"convert it again with scripts/convert_fid_inception_weights.py "
        f"{WEIGHTS_FILENAME} fid_inception.npz").items()}
    validate_flat_variables(flat, source=path)
    return unflatten_variables(flat)


# ------------------------------------------------------- pytorch-fid state dict → Flax

# Entries of pytorch-fid's state dict that the pool3 trunk does not use. They are
# dropped by name (and reported by the converter), never silently.
_IGNORED_SUFFIXES = (".num_batches_tracked",)   # BatchNorm's step counter (training only)
_IGNORED_PREFIXES = ("fc.", "AuxLogits.")       # 1008-way head / aux head: not pool3

_BN_NAMES = {"weight": ("params", "scale"), "bias": ("params", "bias"),
             "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def convert_pytorch_fid_state_dict(
        state_dict: Mapping[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], list]:
    """Map pytorch-fid's Inception state dict to our flat Flax keys.

    `<block>.conv.weight` (O, I, kh, kw) → `params/<block>/conv/kernel` (kh, kw, I, O);
    `<block>.bn.{weight, bias}` → `params/<block>/bn/{scale, bias}`;
    `<block>.bn.running_{mean, var}` → `batch_stats/<block>/bn/{mean, var}`,
    with `<block>` the dotted PyTorch module path turned into `/` (e.g.
    `Mixed_6b.branch7x7_2`). Returns (flat arrays in float32, dropped keys).
    Raises ValueError on any other key. Nothing is folded: BatchNorm stays separate.
    """
    flat: Dict[str, np.ndarray] = {}
    dropped, unknown = [], []
    for name, value in state_dict.items():
        value = np.asarray(value)
        if name.endswith(_IGNORED_SUFFIXES) or name.startswith(_IGNORED_PREFIXES):
            dropped.append(name)
            continue
        parts = name.split(".")
        module, layer, leaf = parts[:-2], parts[-2] if len(parts) >= 3 else "", parts[-1]
        path = "/".join(module)
        if layer == "conv" and leaf == "weight" and value.ndim == 4:
            flat[f"params/{path}/conv/kernel"] = np.transpose(value, (2, 3, 1, 0)).astype(np.float32)
        elif layer == "bn" and leaf in _BN_NAMES:
            collection, flax_leaf = _BN_NAMES[leaf]
            flat[f"{collection}/{path}/bn/{flax_leaf}"] = value.astype(np.float32)
        else:
            unknown.append(f"{name} {tuple(value.shape)}")
    if unknown:
        raise ValueError(
            "state dict entries with no place in the FID Inception-v3 tree (is this "
            f"pytorch-fid's {WEIGHTS_FILENAME}?):\n  " + "\n  ".join(sorted(unknown)[:20]))
    return flat, sorted(dropped)
