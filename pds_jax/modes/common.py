"""Pieces shared by the CLI modes: checkpoints → score functions, the configured sampler,
resumable batch loops and run folders, run metadata."""

from __future__ import annotations

import contextlib
import datetime
import os
import time
from typing import Optional

import jax
import numpy as np
from tqdm import tqdm

from pds_jax import batch_files, distributed, pds, resources
from pds_jax import images as image_io
from pds_jax.io_utils import atomic_write_json, check_output_folder, load_json
from pds_jax.provenance import config_hash, device_info, inputs_hash, inputs_identity
from pds_jax.samplers import get_sampler
from pds_jax.score_model import load_score_model
from pds_jax.sharding import batch_sharding, data_mesh

GRID_SIZE = 64

# score_sde's released JAX checkpoints, by the config file they belong to (its README,
# "Pretrained checkpoints": one Google Drive folder per entry).
SCORE_SDE_RELEASES = {
    "ffhq": "ve/ffhq_1024_ncsnpp_continuous",
    "ffhq_256": "ve/ffhq_256_ncsnpp_continuous",
    "lsun/bedroom": "ve/bedroom_ncsnpp_continuous",
    "bedroom": "ve/bedroom_ncsnpp_continuous",
    "lsun/church": "ve/church_ncsnpp_continuous",
    "church_outdoor": "ve/church_ncsnpp_continuous",
    "celebahq_256": "ve/celebahq_256_ncsnpp_continuous",
    "cifar10": "ve/cifar10_ncsnpp_deep_continuous (or another CIFAR-10 entry matching the config)",
}


def check_finite(x, what: str) -> None:
    """Raise ValueError if a sampler returned NaN/Inf (uint8 conversion would hide it)."""
    bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise ValueError(
            f"{what}: the sampler returned {bad} non-finite values (NaN/Inf) out of {np.size(x)}; "
            "the images would be garbage, so nothing was saved for it. Usual causes: a diverged "
            "checkpoint, or too few steps for the filters (lower sampling.pds.speed_up / --speed_up, "
            "raise sampling.pds.alpha / --alpha, or sample without filters).")


def checkpoint_path(config, workdir: Optional[str]) -> str:
    """`config.sampling.checkpoint`, or `<workdir>/checkpoints` (score_sde's layout) if empty."""
    path = config.sampling.checkpoint
    if not path:
        if not workdir:
            raise ValueError("set --config.sampling.checkpoint or --workdir (holding checkpoints/)")
        path = os.path.join(workdir, "checkpoints")
    return resources.resolve(path, missing_ok=True)  # load_score_fn reports a missing one


def missing_checkpoint_message(config) -> str:
    """What to do about a missing checkpoint (the `fix` of its `resources.resolve` error)."""
    dataset = str(config.data.dataset).lower()
    release = SCORE_SDE_RELEASES.get(dataset)
    where = (f"the score_sde release '{release}'" if release else "the score_sde checkpoint for this config")
    return (
        f"Download {where} (JAX, a file named checkpoint_<n>) from the Google Drive folder linked in "
        "https://github.com/yang-song/score_sde#pretrained-checkpoints, and put it at that path — or "
        "point --config.sampling.checkpoint at the file or at a folder holding checkpoint_<n> files "
        "(the latest is used). pds_jax reads these files unchanged; no conversion step.")


def load_score_fn(config, workdir: Optional[str] = None, ema: bool = True):
    """(sde, model, params, score_fn, checkpoint file) for the checkpoint a config names.

    The parameter tree is checked against the model built from the config, so a
    checkpoint of another architecture fails with the list of differing paths.
    """
    path = resources.resolve(checkpoint_path(config, workdir), what="checkpoint",
                             fix=missing_checkpoint_message(config))
    loaded = load_score_model(config, path, ema=ema)
    print(f"checkpoint: {loaded[-1]}")  # the file actually loaded (a folder names its latest)
    return loaded


def run_header(config, mode: str) -> dict:
    """The common head of every run.json / eval.json."""
    return {
        "mode": mode,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "config_hash": config_hash(config),
        "device": device_info(),
    }


# --------------------------------------------------------------------------- #
# The configured sampler and resumable runs (sample, eval).
# --------------------------------------------------------------------------- #

def image_shape(config):
    return (config.data.image_size, config.data.image_size, config.data.num_channels)


def build_sampler(config, sde, shape, inverse_scaler):
    """(the configured `Sampler`, its `PDSSetup` or None), data-parallel over local devices.

    PC runs the schedule, α and filters that `pds_jax.pds.from_config` resolves; the
    deterministic samplers (ODE, DEIS) have no use for the PDS section (a one-line note
    says so when it is set). Every sampler checks its output for NaN/Inf (`check_finite`):
    a diverged run fails naming the settings to change instead of saving garbage.
    """
    method = str(config.sampling.method).lower()
    setup = pds.from_config(config, sde) if method == "pc" else None
    if setup is None and _pds_section_used(config):
        print(f"note: sampling.method={method} ignores the sampling.pds section (filters, speed_up, "
              "alpha): PDS preconditions the PC sampler only")
    sharding = None
    if jax.device_count() > 1 and shape[0] % jax.device_count() == 0:
        # One mesh over the devices of all processes: the batch is one global array.
        sharding = batch_sharding(data_mesh(jax.devices()))
    elif jax.process_count() > 1:
        raise ValueError(f"the batch size {shape[0]} must be a multiple of the {jax.device_count()} devices "
                         f"of the {jax.process_count()} processes (set config.sampling.batch_size or "
                         "config.eval.batch_size accordingly)")
    sampler = get_sampler(config, sde, shape, inverse_scaler=inverse_scaler, batch_sharding=sharding,
                          setup=setup, check_finite=True)
    return sampler, setup


def _pds_section_used(config) -> bool:
    p = config.sampling.get("pds", None)
    if p is None:
        return False
    return bool(p.get("freq_filter", "") or p.get("space_filter", "")) or float(p.get("speed_up", 1)) != 1


def run_inputs(checkpoint: str, setup=None, **files) -> dict:
    """`provenance.inputs_identity` of the files that shape a run's result: the checkpoint
    file actually loaded, the PDS filter files of `setup`, and `files` (e.g. stats_file)."""
    paths = {"checkpoint": checkpoint, **files}
    if setup is not None:
        paths.update({f"{kind}_filter": path for kind, path in setup.filter_files.items()})
    return inputs_identity(paths)


def sampler_report(sampler, setup) -> dict:
    """What drew the samples, for run.json / eval.json."""
    return {"method": sampler.method, "num_steps": int(sampler.num_steps), "sampler": sampler.describe(),
            "preconditioner": setup.precond.describe() if setup is not None else None,
            "pds_alpha": setup.alpha if setup is not None else None}


PROGRESS_FIX = "delete that run folder (or its progress.json) and start the run again"


def write_progress(out: str, config, inputs: Optional[dict], complete: bool) -> None:
    """`<out>/progress.json`: what a resumed run must match (config and input hashes)."""
    atomic_write_json(os.path.join(out, "progress.json"), {
        "config_hash": config_hash(config), "inputs_hash": inputs_hash(inputs or {}),
        "inputs": {k: v["sha256"] for k, v in (inputs or {}).items()}, "complete": bool(complete)},
        overwrite=True)


def output_dir(workdir: str, name: str, config, inputs: Optional[dict] = None) -> str:
    """`<workdir>/<name>` to resume, else the next free name (`<name>_<k>`), with progress.json.

    A folder is resumed only if it is unfinished and was started with the same config AND
    the same inputs (`run_inputs`: checkpoint, filter and statistics files, by content
    hash): batches drawn from another checkpoint are never mixed into this run. An
    unfinished run with other inputs is left alone, with a one-line notice. The workdir is
    checked to be a writable folder first, before any work. With several processes,
    process 0 chooses (and creates) the folder and broadcasts its path, so all processes
    write into the same folder of the shared workdir.
    """
    if distributed.process_count() == 1:
        return _choose_output_dir(workdir, name, config, inputs)
    chosen = np.zeros(4096, np.uint8)
    if distributed.is_main():
        encoded = os.path.abspath(_choose_output_dir(workdir, name, config, inputs)).encode()
        if len(encoded) >= chosen.size:
            raise ValueError(f"--workdir {workdir!r} is too long a path (over {chosen.size - 1} bytes)")
        chosen[:len(encoded)] = np.frombuffer(encoded, np.uint8)
    chosen = np.asarray(distributed.broadcast(chosen))
    return bytes(chosen[chosen != 0]).decode()


def _choose_output_dir(workdir: str, name: str, config, inputs: Optional[dict]) -> str:
    check_output_folder(workdir)
    want, k, stale = inputs_hash(inputs or {}), 0, None
    while True:
        candidate = os.path.join(workdir, name if k == 0 else f"{name}_{k}")
        if not os.path.exists(candidate):
            os.makedirs(os.path.join(candidate, "batches"))
            write_progress(candidate, config, inputs, complete=False)
            if stale is not None:
                print(stale + f"; this run writes to {candidate} instead of mixing the two")
            return candidate
        progress = os.path.join(candidate, "progress.json")
        if os.path.exists(progress):
            state = load_json(progress, "the progress file", fix=PROGRESS_FIX)
            if state.get("config_hash") == config_hash(config) and not state.get("complete"):
                if state.get("inputs_hash") == want:
                    return candidate
                if stale is None:
                    old = state.get("inputs", {})
                    changed = sorted(n for n in set(old) | set(inputs or {})
                                     if old.get(n) != (inputs or {}).get(n, {}).get("sha256"))
                    what = (f"changed: {', '.join(changed)}" if "inputs_hash" in state
                            else "not recorded: started by an older pds_jax")
                    stale = (f"notice: {candidate} is an unfinished run of this config with other "
                             f"inputs ({what})")
        k += 1


@contextlib.contextmanager
def discarded_if_empty(out: str):
    """Run the body; if it fails before any result exists, remove the run folder `out` (its
    progress.json and empty batches/ with it), so that a failed run leaves no empty folder.
    A folder holding anything else is left as it is."""
    try:
        yield out
    except BaseException:
        batches = os.path.join(out, "batches")
        if os.path.isdir(batches) and not os.listdir(batches):
            os.rmdir(batches)
            progress = os.path.join(out, "progress.json")
            if os.path.exists(progress):
                os.remove(progress)
        if os.path.isdir(out) and not os.listdir(out):
            os.rmdir(out)
        raise


def draw_batches(sampler, score_fn, key, num_batches: int, batch_dir: str, desc: str = "sampling") -> dict:
    """Draw the batches of a resumable run that are not on disk yet (on every process).

    Batch k uses the key `fold_in(key, k)` and is written atomically, as soon as it is
    done (`pds_jax.batch_files`: uint8 NHWC `images` and its `nfe`; with several processes
    each writes the rows it holds), so an interrupted run redrawn with the same key gives
    the same images. Process 0 decides which batches are missing and broadcasts the list,
    so all processes run the same sequence of (collective) sampler calls. Returns
    {k: {'seconds', 'nfe'}} for the batches drawn by this call (the first includes the
    compile); every process has returned only once all batches are written.
    """
    todo = np.zeros(num_batches, np.int32)
    if distributed.is_main():
        todo[batch_files.missing(batch_dir, num_batches)] = 1
    todo = np.asarray(distributed.broadcast(todo))
    drawn, batches = {}, np.flatnonzero(todo).tolist()
    # progress in steps, within a batch too (the PC sampler runs as chunks of steps)
    with tqdm(total=len(batches) * int(sampler.num_steps), desc=desc, unit="step",
              disable=not distributed.is_main() or not batches) as bar:
        for k, b in enumerate(batches):
            bar.set_postfix_str(f"batch {k + 1}/{len(batches)}")
            start = time.perf_counter()
            try:
                x, nfe = sampler.call_with_progress(jax.random.fold_in(key, b), score_fn, bar.update)
            except FloatingPointError as e:  # the sampler's check_finite, with the batch named
                raise FloatingPointError(f"batch {b} in {batch_dir}: {e}; nothing was saved for it") from e
            rows, x = batch_files.local_rows(x)
            drawn[b] = {"seconds": time.perf_counter() - start, "nfe": int(nfe)}
            check_finite(x, f"batch {b} in {batch_dir}")
            batch_files.save(batch_dir, b, rows, image_io.to_uint8(x), nfe, sampler.shape[0])
    distributed.barrier(f"batches drawn in {batch_dir}")
    return drawn


def load_batches(batch_dir: str, num_samples: int):
    """(images uint8 NHWC [:num_samples] in global order, per-batch NFE or None where unknown)."""
    return batch_files.load(batch_dir, num_samples)
