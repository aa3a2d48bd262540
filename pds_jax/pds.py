"""The PC schedule and the PDS setup, resolved once (docs/design.md §2–§3).

Everything a PC run needs that is derived from settings lives in one frozen record,
`PDSSetup`, built by `from_config(config, sde)` or `from_arguments(sde, shape, ...)`:

* the schedule actually run: N PC steps and the final time eps. The official PDS CLI's
  `--speed_up k` sets N = int(num_scales / k) and eps = eps₀ · k (`pc_schedule`); a
  caller that knows N (a study sweeping N) passes `num_steps` instead, which is k = N₀ / N;
* the α the filters are built with: a number > 1, or 'auto', the rule
  `pds_jax.alpha_rule.auto_alpha(freq, space, sde, N)` evaluated at the N just resolved;
* the `Preconditioner` (the identity without filters: the vanilla sampler).

This module is the only place where N, eps and α are computed and validated; samplers,
modes, benchmarks and reports read them from the record (`describe()`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional, Tuple, Union


from pds_jax import alpha_rule, filters
from pds_jax.precond import Preconditioner
from pds_jax.sde import SDE, get_sde

NORMALIZATIONS = ("normalized", "legacy")


class ScheduleError(ValueError):
    """A speed_up / num_steps that leaves no valid PC schedule."""


def pc_schedule(sde: SDE, speed_up: Optional[float] = 1.0, eps: Optional[float] = None,
                num_steps: Optional[int] = None) -> Tuple[SDE, float]:
    """(the SDE discretised with the N steps run, the final time eps).

    `speed_up = k` (official PDS CLI): N = int(sde.N / k), eps = eps₀ · k, with eps₀ = `eps`
    or `sde.default_eps`. `num_steps = N` instead: k = sde.N / N (the same eps scaling).
    """
    base_eps = sde.default_eps if eps is None else float(eps)
    if num_steps is not None:
        n = int(num_steps)
        if n != num_steps or not 1 <= n:
            raise ScheduleError(f"num_steps must be a whole number >= 1, got {num_steps}")
        return sde.with_steps(n), base_eps * (sde.N / n)
    k = float(speed_up)
    if not (math.isfinite(k) and k > 0):
        raise ScheduleError(f"speed_up must be a finite number > 0, got {speed_up}")
    n = int(sde.N / k)
    if n < 1:
        raise ScheduleError(f"speed_up={speed_up} leaves no steps of the N={sde.N} schedule "
                         f"(N / speed_up < 1); use speed_up <= {sde.N}")
    return sde.with_steps(n), base_eps * k


def resolve_alpha(setting, num_steps: int, sde: SDE, freq=None, space=None,
                  normalization: str = "normalized", **schedule) -> Optional[float]:
    """The numeric α for `setting` (number, numeric string or 'auto'); None without filters.

    `sde` is the model's SDE (N₀ steps) and `schedule` the rest of the run (eps, snr,
    n_steps, centered) that `alpha_rule.auto_alpha` prices.
    """
    alpha = alpha_rule.parse_alpha(setting)  # validates, also when no filter uses it
    if freq is None and space is None:
        return None
    if alpha == alpha_rule.AUTO:
        if normalization != "normalized":
            raise ValueError(
                f"config.sampling.pds.alpha='auto' is defined for normalization='normalized' (α has "
                f"another meaning for the unnormalised statistics of {normalization!r}); set a number")
        alpha = alpha_rule.auto_alpha(freq, space, sde, num_steps, **schedule)
    return float(alpha)


@dataclasses.dataclass(frozen=True)
class PDSSetup:
    """What a PC run with (or without) PDS runs: schedule, α and preconditioner.

    Attributes:
      sde: the SDE with the N steps run (`sde.N == num_steps`).
      num_steps: N, the number of PC steps.
      eps: the final time of the schedule.
      speed_up: k = N₀ / N relative to the model's schedule.
      alpha: the α the filters were built with; None without filters.
      alpha_setting: what was asked for (a number or 'auto').
      normalization: 'normalized' | 'legacy'.
      filter_files: {'freq': path, 'space': path} of the statistics files used.
      precond: the `Preconditioner` (identity without filters).
    """

    sde: SDE
    num_steps: int
    eps: float
    speed_up: float
    alpha: Optional[float]
    alpha_setting: Union[float, str]
    normalization: str
    filter_files: Mapping[str, str]
    precond: Preconditioner

    @property
    def uses_pds(self) -> bool:
        return not self.precond.is_identity

    def describe(self) -> dict:
        """JSON-able summary for logs and run.json."""
        return {"num_steps": int(self.num_steps), "eps": float(self.eps), "speed_up": float(self.speed_up),
                "pds": self.uses_pds, "alpha": self.alpha, "alpha_setting": self.alpha_setting,
                "normalization": self.normalization, "filter_files": dict(self.filter_files),
                "preconditioner": self.precond.describe()}


def from_arguments(sde: SDE, shape, *, speed_up: Optional[float] = 1.0, eps: Optional[float] = None,
                   num_steps: Optional[int] = None, freq=None, space=None, alpha=5.0,
                   normalization: str = "normalized", solenoidal_omega: float = 0.0,
                   precond: Optional[Preconditioner] = None,
                   filter_files: Optional[Mapping[str, str]] = None, snr: float = 0.16, n_steps: int = 1,
                   centered: Optional[bool] = None) -> PDSSetup:
    """A `PDSSetup` from plain arguments.

    Args:
      sde: the model's SDE (its N is the full schedule N₀).
      shape: (H, W, C) of the images.
      speed_up / num_steps: the schedule (see `pc_schedule`); eps: eps₀ (default the SDE's).
      freq, space: raw statistics R and A ((H, W, C) arrays) or None.
      alpha: a number > 1 or 'auto'; normalization: 'normalized' | 'legacy'.
      solenoidal_omega: ω of the solenoidal term (0: none).
      precond: a ready preconditioner instead of statistics (then α is not used).
      snr, n_steps, centered: the corrector's settings and whether the statistics describe
        [0, 1] data that the model sees in [−1, 1] — what `alpha='auto'` prices (None:
        `pds_jax.alpha_law`'s default by SDE type).
    """
    run_sde, final_eps = pc_schedule(sde, speed_up, eps, num_steps)
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization (config.sampling.pds.normalization) must be one of "
                         f"{NORMALIZATIONS}, got {normalization!r}")
    given = precond is not None  # a ready preconditioner: its α is the setting
    if given:
        if freq is not None or space is not None:
            raise ValueError("give either a ready `precond` or filter statistics (freq/space), not both")
        resolved = precond.alpha
    else:
        resolved = resolve_alpha(alpha, run_sde.N, sde, freq, space, normalization, eps=final_eps, snr=snr,
                                 n_steps=n_steps, centered=centered)
        precond = _preconditioner(shape, freq, space, resolved, normalization, solenoidal_omega)
    setting = resolved if given else alpha_rule.parse_alpha(alpha)
    return PDSSetup(run_sde, run_sde.N, float(final_eps), sde.N / run_sde.N, resolved,
                    setting, normalization, dict(filter_files or {}), precond)


def _preconditioner(shape, freq, space, alpha, normalization, omega) -> Preconditioner:
    if freq is None and space is None:
        if omega:
            return Preconditioner.from_filters(None, None, shape=shape, solenoidal_omega=omega)
        return Preconditioner.identity(shape)
    return Preconditioner.from_arrays(freq=freq, space=space, alpha=alpha, mode=normalization,
                                      solenoidal_omega=omega)


def config_filter_statistics(config) -> Tuple[dict, dict]:
    """({'freq': R, 'space': A}, {'freq': path, ...}) of the files config.sampling.pds names."""
    pds = config.sampling.pds
    stats, files = {}, {}
    for kind in ("freq", "space"):
        path = str(pds.get(f"{kind}_filter", "") or "")
        if path:
            stats[kind], files[kind] = filters.load_statistic(
                path, kind, config, f"config.sampling.pds.{kind}_filter={path}", return_path=True)
    return stats, files


def _statistics_centered(config, files: Mapping[str, str]) -> bool:
    """Whether the statistics describe [0, 1] images that the model sees in [−1, 1].

    pds_jax `.npz` files are estimated in the model's data space (`filters.check_compatible`
    enforces it); the official PDS `.npy` files come from [0, 1] images.
    """
    official = any(str(path).endswith(".npy") for path in files.values())
    return bool(official and config.data.centered)


def from_config(config, sde: Optional[SDE] = None, *, alpha=None, num_steps: Optional[int] = None,
                statistics: Optional[Tuple[dict, dict]] = None) -> PDSSetup:
    """The `PDSSetup` of `config.sampling.pds` for the model of `config`.

    Reads speed_up (or `num_steps`), alpha (or the `alpha` argument, e.g. for an α sweep),
    normalization, freq_filter / space_filter (official `.npy` or pds_jax `.npz` files;
    '' = not used) and solenoidal_omega. `statistics` may pass already loaded
    (stats, files) of `config_filter_statistics` so that a sweep reads the files once.
    """
    pds = config.sampling.pds
    sde = sde if sde is not None else get_sde(config)
    stats, files = statistics if statistics is not None else config_filter_statistics(config)
    shape = (int(config.data.image_size), int(config.data.image_size), int(config.data.num_channels))
    try:
        return from_arguments(
            sde, shape, speed_up=None if num_steps is not None else pds.speed_up, num_steps=num_steps,
            freq=stats.get("freq"), space=stats.get("space"), alpha=pds.alpha if alpha is None else alpha,
            normalization=str(pds.normalization), solenoidal_omega=float(pds.get("solenoidal_omega", 0.0) or 0.0),
            filter_files=files, snr=float(config.sampling.snr), n_steps=int(config.sampling.n_steps_each),
            centered=_statistics_centered(config, files))
    except ScheduleError as e:
        if num_steps is not None:
            raise
        raise ScheduleError(f"config.sampling.pds.speed_up={pds.speed_up} (--speed_up) with "
                            f"config.model.num_scales={config.model.num_scales}: {e}") from None
