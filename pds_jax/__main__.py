"""`python -m pds_jax ...`: the pds_jax command line (`pds_jax.cli`)."""

from pds_jax.cli import run

if __name__ == "__main__":
    run()
