"""pds_jax.images: captions are never cut off, upscaling keeps pixels sharp."""

import numpy as np

from pds_jax import images


def test_caption_wider_than_the_image_widens_it():
    tiny = np.zeros((8, 8, 1), np.uint8)
    out = images.captioned(tiny, "PDS  alpha 6.23\n50 steps  NFE 100")
    assert out.shape[0] == 8 + 26 and out.shape[1] > 60  # 2 lines of 12 px + 2
    strip = out[:26]
    assert strip.min() < 64  # text drawn
    assert (strip[:, -2:] == 255).all()  # the right margin is blank: nothing was cut off
    np.testing.assert_array_equal(out[26:, :8], tiny)
    assert (out[26:, 8:] == 255).all()


def test_upscaled_repeats_pixels_to_the_minimum_size():
    batch = np.arange(2 * 3 * 3 * 1, dtype=np.uint8).reshape(2, 3, 3, 1)
    big = images.upscaled(batch, 8)  # factor 3
    assert big.shape == (2, 9, 9, 1)
    np.testing.assert_array_equal(big[:, ::3, ::3], batch)
    one = batch[0]
    assert images.upscaled(one, 2) is one  # already large enough
