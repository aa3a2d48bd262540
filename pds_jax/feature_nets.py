"""Feature networks for FID/KID: a registry, FID Inception-v3 and a Fashion-MNIST CNN.

`get_feature_fn(name)` returns a `FeatureExtractor`: a jittable
images (B, H, W, C) in [0, 1] → features (B, d), with its parameters exposed so that
`pds_jax.metrics` can pass them to `jit` as (replicated) arguments instead of baking
~24M Inception weights into the compiled program as constants.

* 'inception' — the FID Inception-v3 (2048-d pool3, `pds_jax.inception`); needs the
  converted weights file (`weights_path` or $PDS_JAX_INCEPTION_WEIGHTS). Numbers are
  comparable with published FIDs.
* 'fashion_mnist' — a small CNN classifier trained by us on Fashion-MNIST
  (`scripts/train_feature_net.py`); its 128-d penultimate layer is a domain-specific
  "FID" feature, in the spirit of the LeNet features once used for MNIST FIDs (an early
  version of pytorch-fid shipped `lenet.py` with `models/lenet.pth`). It works offline on this CPU machine; its values are only comparable with other
  numbers computed with the same shipped weights.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization, traverse_util
from tqdm.auto import tqdm

from pds_jax import fashion_mnist, inception, resources
from pds_jax.io_utils import atomic_write_bytes

CLASSIFIER_NAME = "checkpoints/fashion_mnist_classifier"  # shipped asset (pds_jax.resources)
CLASSIFIER_DIR = resources.asset_path(CLASSIFIER_NAME)
CLASSIFIER_PARAMS = os.path.join(CLASSIFIER_DIR, "params.msgpack")
CLASSIFIER_TRAIN_STATS = os.path.join(CLASSIFIER_DIR, "fashion_mnist_train_stats.npz")
INCEPTION_ENV_VAR = "PDS_JAX_INCEPTION_WEIGHTS"
CLASSIFIER_INPUT = (32, 32, 1)
FEATURE_NETS = ("inception", "fashion_mnist")


@dataclasses.dataclass(frozen=True)
class FeatureExtractor:
    """A feature network: `apply(params, images) -> (B, dim)`, pure and jittable.

    Calling the extractor, `extractor(images)`, applies it with its own `params`.
    Images are NHWC in [0, 1].
    """

    name: str
    dim: int
    apply: Callable[[Any, jax.Array], jax.Array]
    params: Any

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.apply(self.params, images)


# ------------------------------------------------------------ Fashion-MNIST CNN


def _max_pool_2x2(x: jax.Array) -> jax.Array:
    """2×2/2 max pool as reshape + max: same values as `nn.max_pool`, but its gradient
    is a cheap mask, where XLA:CPU's select-and-scatter made training steps ~3x slower."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class FashionMNISTClassifier(nn.Module):
    """Small VGG-style CNN: (B, 32, 32, 1) in [0, 1] → (features (B, 128), logits (B, 10)).

    conv3×3(32) → pool → conv3×3(64) ×2 → pool → conv3×3(128) → pool → dense(128) → dense(10),
    ReLU everywhere; the features are the post-ReLU 128-d penultimate layer.
    """

    feature_dim: int = 128
    num_classes: int = 10

    @nn.compact
    def __call__(self, images: jax.Array) -> Tuple[jax.Array, jax.Array]:
        x = 2.0 * images.astype(jnp.float32) - 1.0
        for width in (32, 64, 128):
            x = nn.relu(nn.Conv(width, (3, 3))(x))
            if width == 64:
                x = nn.relu(nn.Conv(width, (3, 3))(x))
            x = _max_pool_2x2(x)                                 # 32 → 16 → 8 → 4
        x = x.reshape((x.shape[0], -1))
        features = nn.relu(nn.Dense(self.feature_dim, name="features")(x))
        logits = nn.Dense(self.num_classes, name="logits")(features)
        return features, logits


_CLASSIFIER = FashionMNISTClassifier()


def prepare_fashion_mnist(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) → float32 (N, 32, 32, 1) in [0, 1], zero-padded by 2 pixels.

    The same layout as `fashion_mnist.pad_to_32` gives the diffusion models.
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 Fashion-MNIST images (N, 28, 28), got "
                         f"{images.dtype} {images.shape}")
    return (fashion_mnist.pad_to_32(images).astype(np.float32) / 255.0)[..., None]


def _classifier_input(images: jax.Array) -> jax.Array:
    if images.ndim != 4 or images.shape[-1] != 1 or images.shape[1:3] not in ((28, 28), (32, 32)):
        raise ValueError(
            f"the Fashion-MNIST feature net takes grayscale NHWC images (B, 32, 32, 1) or "
            f"(B, 28, 28, 1) in [0, 1], got {images.shape}")
    if images.shape[1] == 28:  # unpadded Fashion-MNIST: pad like pad_to_32
        images = jnp.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    return images


def classifier_features(params: Any, images: jax.Array) -> jax.Array:
    """Penultimate 128-d features of the classifier; images (B, 32|28, 32|28, 1) in [0, 1]."""
    return _CLASSIFIER.apply({"params": params}, _classifier_input(images))[0]


def classifier_logits(params: Any, images: jax.Array) -> jax.Array:
    """Class logits (B, 10) of the classifier (same inputs as `classifier_features`)."""
    return _CLASSIFIER.apply({"params": params}, _classifier_input(images))[1]


def init_classifier_params(seed: int = 0) -> Dict:
    """Freshly initialised classifier params (Flax default initialisers), seeded."""
    return _CLASSIFIER.init(jax.random.PRNGKey(seed), jnp.zeros((1,) + CLASSIFIER_INPUT))["params"]


def train_classifier(images: np.ndarray, labels: np.ndarray, *, epochs: int = 6,
                     batch_size: int = 128, learning_rate: float = 2e-3,
                     weight_decay: float = 1e-4, seed: int = 0,
                     progress: bool = True) -> Dict:
    """Train the classifier with AdamW + one-cycle cosine schedule; return its params.

    images: float32 (N, 32, 32, 1) in [0, 1] (see `prepare_fashion_mnist`); labels (N,).
    Deterministic for a given `seed` (init key and NumPy shuffling); the last partial
    batch of each epoch is skipped (a fresh permutation every epoch covers it).
    """
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int32)
    steps_per_epoch = len(images) // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"need at least batch_size={batch_size} images, got {len(images)}")
    schedule = optax.cosine_onecycle_schedule(epochs * steps_per_epoch, learning_rate)
    optimizer = optax.adamw(schedule, weight_decay=weight_decay)
    params = init_classifier_params(seed)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(p):
            logits = classifier_logits(p, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        order = rng.permutation(len(images))
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress)
        for i in bar:
            idx = order[i * batch_size:(i + 1) * batch_size]
            params, opt_state, loss = step(params, opt_state, images[idx], labels[idx])
            losses.append(loss)
            if i % 50 == 0:
                bar.set_postfix(loss=f"{float(loss):.3f}")
        if not np.isfinite(float(losses[-1])):
            raise FloatingPointError(f"training diverged in epoch {epoch + 1}; lower learning_rate")
    return params


@jax.jit
def _predict(params: Any, images: jax.Array) -> jax.Array:
    return jnp.argmax(classifier_logits(params, images), axis=-1)


def classifier_accuracy(params: Any, images: np.ndarray, labels: np.ndarray,
                        batch_size: int = 1000) -> float:
    """Top-1 accuracy of the classifier on (N, 32, 32, 1) images in [0, 1]."""
    correct = 0
    for i in range(0, len(images), batch_size):
        correct += int(np.sum(np.asarray(_predict(params, images[i:i + batch_size]))
                              == np.asarray(labels[i:i + batch_size])))
    return correct / len(images)


def save_classifier_params(path: str, params: Any, overwrite: bool = False) -> str:
    """Write classifier params as flax msgpack (`flax.serialization.to_bytes`), atomically."""
    return atomic_write_bytes(path, serialization.to_bytes(jax.device_get(params)), overwrite)


def load_classifier_params(path: Optional[str] = None) -> Dict:
    """Read classifier params (default: the shipped ones) and check the tree and shapes."""
    path = resources.resolve(path or CLASSIFIER_PARAMS, what="Fashion-MNIST classifier weights",
                             fix=f"they ship with pds_jax in {CLASSIFIER_DIR} (retrain: python "
                                 "scripts/train_feature_net.py)")
    with open(path, "rb") as f:
        try:
            restored = serialization.msgpack_restore(f.read())
        except Exception as e:  # msgpack raises several unrelated types
            raise ValueError(f"{path}: not a flax msgpack file ({e})") from e
    expected = {k: v.shape for k, v in traverse_util.flatten_dict(
        jax.eval_shape(init_classifier_params)).items()}
    got = traverse_util.flatten_dict(restored) if isinstance(restored, dict) else {}
    problems = [f"missing {'/'.join(k)}" for k in expected if k not in got]
    problems += [f"unexpected {'/'.join(k)}" for k in got if k not in expected]
    problems += [f"{'/'.join(k)}: shape {np.shape(got[k])}, expected {expected[k]}"
                 for k in expected if k in got and np.shape(got[k]) != expected[k]]
    if problems:
        raise ValueError(f"{path} does not match FashionMNISTClassifier: " + "; ".join(problems))
    return jax.tree.map(jnp.asarray, restored)


# -------------------------------------------------------------------- registry


def _inception_features(variables: Any, images: jax.Array) -> jax.Array:
    return inception.InceptionV3().apply(variables, images)


def get_feature_fn(name: str, weights_path: Optional[str] = None) -> FeatureExtractor:
    """The feature network `name` ('inception' or 'fashion_mnist') with its weights.

    'inception' reads `weights_path` (or $PDS_JAX_INCEPTION_WEIGHTS), a `.npz` made by
    scripts/convert_fid_inception_weights.py; 'fashion_mnist' defaults to the shipped
    pds_jax/assets/checkpoints/fashion_mnist_classifier/params.msgpack.
    """
    if name == "inception":
        weights_path = weights_path or os.environ.get(INCEPTION_ENV_VAR)
        if not weights_path:
            raise ValueError(
                "the 'inception' feature net needs the FID Inception weights, which no package "
                f"ships: download {inception.WEIGHTS_URL}, convert it once with "
                f"`python scripts/convert_fid_inception_weights.py {inception.WEIGHTS_FILENAME} "
                f"fid_inception.npz` (needs torch), then pass weights_path='fid_inception.npz' "
                f"or set {INCEPTION_ENV_VAR}")
        return FeatureExtractor("inception", inception.FEATURE_DIM, _inception_features,
                                inception.load_inception_params(weights_path))
    if name == "fashion_mnist":
        params = load_classifier_params(weights_path)
        return FeatureExtractor("fashion_mnist", _CLASSIFIER.feature_dim, classifier_features,
                                params)
    raise ValueError(f"unknown feature net {name!r}; choose one of {', '.join(FEATURE_NETS)}")
