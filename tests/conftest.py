"""Keep the test suite's files inside one temporary folder of its own.

TensorFlow's Keras writes `$KERAS_HOME/keras.json` (default `~/.keras`) when it is
imported, and tensorflow-datasets makes `tmp*tfds` folders in the system temp folder
while it prepares a dataset; subprocess tests inherit the same environment. Pointing
KERAS_HOME, TMPDIR and `tempfile.tempdir` at a folder made here (before any test module
imports TensorFlow) keeps both out of the user's home and the shared temp folder, and the
folder is removed when the session ends (pytest's own `tmp_path` folders live in it too).
"""

import os
import shutil
import tempfile

SCRATCH = tempfile.mkdtemp(prefix="pds_jax_tests_")
os.environ["KERAS_HOME"] = os.path.join(SCRATCH, "keras")
os.environ["TMPDIR"] = SCRATCH
tempfile.tempdir = SCRATCH


def pytest_unconfigure(config):
    shutil.rmtree(SCRATCH, ignore_errors=True)
