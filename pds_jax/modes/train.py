"""`main.py --mode=train`: train (or resume training) a score model.

Writes under <workdir>: checkpoints/checkpoint_<step> (every training.snapshot_freq
steps and at the end), checkpoints-meta/checkpoint_<step> (every
training.snapshot_freq_for_preemption steps, only the latest kept), samples/
iter_<step>.png (when training.snapshot_sampling), and metrics.jsonl (one JSON object
per logged step: loss, eval loss, steps/s). Starting again in the same workdir resumes
from the newest checkpoint (the metrics logged after it are moved to
metrics.jsonl.before_step_<step>).
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
from tqdm import tqdm

from jax.tree_util import Partial

from pds_jax import checkpoints, data, distributed, models
from pds_jax import images as image_io
from pds_jax import train as training
from pds_jax.data import get_data_inverse_scaler
from pds_jax.io_utils import atomic_write_text, check_output_folder, free_stem
from pds_jax.samplers import get_sampler
from pds_jax.sde import get_sde
from pds_jax.sharding import batch_sharding, data_mesh, replicated

SNAPSHOT_SAMPLES = 16


def _check_schedule(config):
    t = config.training
    k = int(t.n_jitted_steps)
    if k < 1:
        raise ValueError(f"config.training.n_jitted_steps must be >= 1, got {k}")
    for name in ("log_freq", "eval_freq", "snapshot_freq", "snapshot_freq_for_preemption"):
        if int(t[name]) % k:
            raise ValueError(f"config.training.{name}={t[name]} must be a multiple of n_jitted_steps={k}")
    n_dev = jax.device_count()
    if int(t.batch_size) % n_dev:
        raise ValueError(f"config.training.batch_size={t.batch_size} must be divisible by the "
                         f"{n_dev} devices")


def _snapshot_sampler(config, sde):
    """A small sampler (the config's method, vanilla, 16 images) for progress grids."""
    shape = (SNAPSHOT_SAMPLES, config.data.image_size, config.data.image_size, config.data.num_channels)
    return get_sampler(config, sde, shape, inverse_scaler=get_data_inverse_scaler(config))


def _forget_metrics_after(path: str, step: int) -> None:
    """Set aside the metrics.jsonl records of steps after `step`, the step training resumes from.

    A run killed between two checkpoints logged steps that the restart trains again;
    without this they would appear twice (and a line cut by the kill would be invalid JSON).
    The records set aside are not lost: they go to `metrics.jsonl.before_step_<step>`
    (`_<k>` if taken), with a one-line notice. A fresh start (step 0) in a workdir that has
    a metrics.jsonl but no checkpoint thus keeps the old log there, complete.
    """
    if not os.path.exists(path):
        return
    keep, dropped = [], []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and int(record.get("step", 0)) <= step:
                keep.append(line.rstrip("\n") + "\n")
            else:
                dropped.append(line.rstrip("\n") + "\n")
    if dropped:
        backup = free_stem(f"{path}.before_step_{step}")
        atomic_write_text(backup, "".join(dropped))
        print(f"notice: {path} has {len(dropped)} records after step {step}, where training "
              f"{'starts' if step == 0 else 'resumes'}; moved them to {backup}")
    atomic_write_text(path, "".join(keep), overwrite=True)


def _log_step(state, window, step, k, last_log, eval_loss, eval_rng, eval_batches, shard, t, path):
    """Append one metrics.jsonl record (mean loss of the window, steps/s, eval loss on eval steps)."""
    now = time.perf_counter()
    record = {"step": step, "loss": float(np.mean(distributed.to_host(window))),
              "steps_per_s": len(window) * k / (now - last_log)}
    if step % int(t.eval_freq) == 0:  # on every process: the loss is a collective
        eval_rng, r = jax.random.split(eval_rng)
        loss = eval_loss(r, state.params_ema, distributed.to_global(next(eval_batches), shard))
        record["eval_loss"] = float(distributed.to_host(loss))
    if distributed.is_main():
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
    return record, now, eval_rng


def _save_snapshots(config, workdir, state, step, final, sampler, score) -> None:
    """Pre-emption checkpoint, regular checkpoint and sample grid, when they are due; written by
    process 0 (the others wait for it), the grid sampled there from a host copy of params_ema."""
    t = config.training
    meta_due = step % int(t.snapshot_freq_for_preemption) == 0 or final
    due = step % int(t.snapshot_freq) == 0 or final
    if not (meta_due or due):
        return
    if distributed.is_main():  # host copies of the replicated state, read from a local shard (no collective)
        raw = training.to_score_sde_dict(config, state)
        if meta_due:
            checkpoints.save_checkpoint(os.path.join(workdir, "checkpoints-meta"), raw, step, keep=1, overwrite=True)
        if due:
            checkpoints.save_checkpoint(os.path.join(workdir, "checkpoints"), raw, step, overwrite=True)
        if due and sampler is not None:
            x, _ = sampler(jax.random.PRNGKey(step), Partial(score, distributed.to_host(state.params_ema)))
            image_io.save_grid(os.path.join(workdir, "samples", f"iter_{step}.png"), np.asarray(x),
                               overwrite=True)
    distributed.barrier(f"checkpoint {step} written")


def run(config, workdir: str) -> dict:
    _check_schedule(config)
    check_output_folder(workdir)  # a read-only workdir or a file fails now, not after compiling
    t = config.training
    resume = training.latest_checkpoint(workdir)
    saved = checkpoints.load_score_sde(resume) if resume else None
    start = int(saved["step"]) if saved else 0
    # Open the data before building the model: a missing dataset fails in a second, not
    # after the parameter initialisation has compiled (tens of seconds on CPU).
    batches = training.train_batches(config, int(t.batch_size), start, int(config.seed))
    # Held-out loss on the test split (image folders and array files have none: train).
    eval_split = "train" if config.data.dataset in ("folder", "arrays") else "test"
    eval_batches = data.get_dataset(config, eval_split, int(t.batch_size), shuffle=True,
                                    seed=int(config.seed) + 1, drop_remainder=True, num_epochs=None)
    sde = get_sde(config)
    optimizer = training.get_optimizer(config)
    state = training.init_state(config, optimizer)
    if saved:
        state = training.from_score_sde_dict(saved, state)
        print(f"resuming from {resume} (step {start})")
    mesh = data_mesh(jax.devices())  # all devices of all processes (one process: its own)
    state = jax.tree.map(lambda leaf: distributed.to_global(np.asarray(leaf), replicated(mesh)), state)
    shard = batch_sharding(mesh)
    k = int(t.n_jitted_steps)
    train_step = training.make_train_step(config, sde, optimizer)
    eval_loss = training.make_eval_loss(config, sde)
    sampler = _snapshot_sampler(config, sde) if t.snapshot_sampling else None
    score = models.ScoreFunction(model=models.create_model(config), sde=sde, continuous=t.continuous)

    metrics_path = os.path.join(workdir, "metrics.jsonl")
    os.makedirs(workdir, exist_ok=True)
    if distributed.is_main():
        _forget_metrics_after(metrics_path, start)
    eval_rng = jax.random.PRNGKey(int(config.seed) + 2)
    last_log, window = time.perf_counter(), []
    report = {"start_step": start}
    bar = tqdm(total=int(t.n_iters), initial=start, desc="training", unit="step", disable=not distributed.is_main())
    step = start
    stacked_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))
    while step < int(t.n_iters):
        stacked = np.stack([next(batches) for _ in range(k)])
        # every process builds the same global batch (a function of seed and step) and places
        # the rows its devices hold, so the batch composition does not depend on the layout
        state, loss = train_step(state, distributed.to_global(stacked, stacked_sharding))
        step += k
        bar.update(k)
        window.append(loss)
        if step % int(t.log_freq) == 0 or step >= int(t.n_iters):
            record, last_log, eval_rng = _log_step(state, window, step, k, last_log, eval_loss, eval_rng,
                                                   eval_batches, shard, t, metrics_path)
            bar.set_postfix(loss=f"{record['loss']:.4g}")
            window = []
            report["last"] = record
        _save_snapshots(config, workdir, state, step, step >= int(t.n_iters), sampler, score)
    bar.close()
    report["final_step"] = step
    print(f"trained to step {step}; checkpoints in {os.path.join(workdir, 'checkpoints')}")
    return report
