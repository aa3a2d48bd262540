"""`python main.py ...` in a repository checkout: the pds_jax command line (`pds_jax/cli.py`).

Installed, the same program is `pds-jax ...` or `python -m pds_jax ...`; see `pds_jax.cli`
for the flags, or run `python main.py --help`.
"""

from pds_jax.cli import FLAGS, MODES, apply_aliases, main, parse_flags, run  # noqa: F401 (re-exported)

if __name__ == "__main__":
    run()
