"""The test suite writes only inside temporary folders of its own (tests/conftest.py).

Run the TensorFlow-datasets tests in a child pytest with a fresh HOME and TMPDIR: before
tests/conftest.py, Keras left `~/.keras/keras.json` and tfds left `tmp*tfds` folders behind.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tfds_tests_leave_nothing_in_home_or_the_temp_folder(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    home, temp = tmp_path / "home", tmp_path / "temp"
    home.mkdir()
    temp.mkdir()
    env = dict(os.environ, HOME=str(home), TMPDIR=str(temp), JAX_PLATFORMS="cpu")
    env.pop("KERAS_HOME", None)  # as a user's shell has it
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_data.py", "-k", "tfds"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
    assert sorted(os.listdir(home)) == [] and sorted(os.listdir(temp)) == []
