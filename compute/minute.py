"""The minute calculation: tag statistics → CEMS per source → unit output and intensity.

Pure: arrays in, arrays out. The runtime turns the arrays into records and totals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from compute import kernels as k
from compute.config import CemsInputs, Input, SourceConfig
from compute.plan import CalculationPlan
from compute.tagstore import Window
from model.flags import DataFlag

_INPUT_COLUMNS = {
    "co2_pct": k.CO2, "temp_c": k.TEMP, "static_pa": k.STATIC, "baro_pa": k.BARO,
    "moisture_pct": k.MOIST, "o2_dry_pct": k.O2_DRY, "o2_wet_pct": k.O2_WET,
}
_FLOW_MODES = {"velocity_m_s": k.FLOW_VELOCITY, "flow_act_m3_h": k.FLOW_ACTUAL,
               "dynamic_pressure_pa": k.FLOW_PITOT}
CALIBRATION_FLAG = np.uint8(DataFlag.C)  # HJ 212-2017 "C": the analyser was calibrating


@dataclass(frozen=True, slots=True)
class SourceArrays:
    """The CEMS part of a minute: one row per source, in configuration order."""

    cems: npt.NDArray[np.float64]  # (sources, kernels.N_OUT)
    flag: npt.NDArray[np.uint8]
    substitution: npt.NDArray[np.uint8]  # kernels.SUB_*; rule id kernels.SUBSTITUTION_RULES


@dataclass(frozen=True, slots=True)
class MinuteArrays:
    """Everything one minute's calculation produced, as arrays in configuration order."""

    tag_mean: npt.NDArray[np.float64]
    tag_min: npt.NDArray[np.float64]
    tag_max: npt.NDArray[np.float64]
    tag_count: npt.NDArray[np.int64]
    tag_flag: npt.NDArray[np.uint8]
    cems: npt.NDArray[np.float64]  # (sources, kernels.N_OUT)
    source_flag: npt.NDArray[np.uint8]
    unit_output_mwh: npt.NDArray[np.float64]
    unit_co2_kg: npt.NDArray[np.float64]
    unit_flag: npt.NDArray[np.uint8]
    # Per source: 0, or the kernels.SUB_* code of the rule that substituted a value
    # this minute (name: kernels.SUBSTITUTION_RULES[code], e.g. "f_factor_o2").
    source_substitution: npt.NDArray[np.uint8]
    # Per unit: the flag of its output minute alone (the power tag's; 0 for a constant).
    unit_output_flag: npt.NDArray[np.uint8]


def source_params(src: SourceConfig) -> npt.NDArray[np.float64]:
    """The kernels' parameter row (kernels.N_PARAMS) of one configured source."""
    inp = src.inputs
    p = np.zeros(k.N_PARAMS, np.float64)
    p[k.AREA] = src.area_m2 or 0.0
    p[k.CO2_WET] = 1.0 if inp.co2_basis == "wet" else 0.0
    p[k.FLOW_MODE] = _FLOW_MODES[flow_key(inp)]
    if src.pitot is not None:
        p[k.KP] = src.pitot.kp
        p[k.KV] = src.pitot.kv
        p[k.MD] = src.pitot.dry_molar_mass_g_mol
    p[k.MOIST_MODE] = 0.0 if inp.moisture_pct is not None else 1.0
    p[k.O2_MODE] = 1.0 if inp.o2_dry_pct is not None else (
        2.0 if inp.o2_wet_pct is not None else 0.0)
    if src.co2_from_o2 is not None:
        p[k.FC_FD] = src.co2_from_o2.fc / src.co2_from_o2.fd
    return p


def flow_key(inp: CemsInputs) -> str:
    """The one configured flow input: velocity_m_s, flow_act_m3_h or dynamic_pressure_pa."""
    for key in _FLOW_MODES:
        if getattr(inp, key) is not None:
            return key
    raise AssertionError("config validation guarantees one flow input")


def run_kernels(values: npt.NDArray[np.float64], flags: npt.NDArray[np.uint8],
                counts: npt.NDArray[np.int64], min_valid: int,
                src_tag: npt.NDArray[np.int64], src_const: npt.NDArray[np.float64],
                params: npt.NDArray[np.float64], t0_k: float, p0_pa: float,
                rho_kg_m3: float, minute_h: float
                ) -> tuple[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64],
                                 npt.NDArray[np.float64], npt.NDArray[np.int64],
                                 npt.NDArray[np.uint8]], SourceArrays]:
    """Tag statistics of a window, then CEMS per source: the numba part of a minute.

    Input (s, c) of the CEMS matrix is tag `src_tag[s, c]`'s minute mean, or
    `src_const[s, c]` where `src_tag` is −1. Returns the tag statistics (mean, min,
    max, count, flag) and the sources' results.
    """
    n_tags = values.shape[0]
    mean = np.empty(n_tags)
    lo = np.empty(n_tags)
    hi = np.empty(n_tags)
    count = np.empty(n_tags, np.int64)
    flag = np.empty(n_tags, np.uint8)
    k.tag_minute_stats(values, flags, counts, min_valid, mean, lo, hi, count, flag)
    n_src = src_tag.shape[0]
    inputs = np.empty((n_src, k.N_INPUTS))
    input_flags = np.empty((n_src, k.N_INPUTS), np.uint8)
    k.gather_inputs(mean, flag, src_tag, src_const, inputs, input_flags)
    cems = np.empty((n_src, k.N_OUT))
    src_flag = np.empty(n_src, np.uint8)
    sub = np.empty(n_src, np.uint8)
    k.cems_minute(inputs, input_flags, params, t0_k, p0_pa, rho_kg_m3, minute_h, cems,
                  src_flag, sub)
    return (mean, lo, hi, count, flag), SourceArrays(cems, src_flag, sub)


class MinuteCalculator:
    """Wires a plant configuration to the kernels: which tag feeds which input."""

    def __init__(self, plan: CalculationPlan) -> None:
        config = plan.config
        self.tag_ids = list(plan.tag_ids)
        self.source_ids = [s.id for _, s in config.sources()]
        self.unit_ids = [u.id for u in config.units]
        tag_pos = {t: i for i, t in enumerate(self.tag_ids)}
        c = config.constants
        self._t0, self._p0, self._rho = c.t0_k, c.p0_pa, c.co2_density_kg_m3
        self._min_valid = config.clock.min_samples_per_minute
        n_src = len(self.source_ids)
        # Input (s, col) reads tag _src_tag[s, col], or the constant when that is -1;
        # an input the source does not have is NaN (the kernel does not read it).
        self._src_tag = np.full((n_src, k.N_INPUTS), -1, np.int64)
        self._src_const = np.full((n_src, k.N_INPUTS), np.nan, np.float64)
        self._params = np.zeros((n_src, k.N_PARAMS), np.float64)
        for s, (_, src) in enumerate(config.sources()):
            inp = src.inputs
            flow = getattr(inp, flow_key(inp))
            self._bind(s, k.FLOW, flow, tag_pos)
            for name, col in _INPUT_COLUMNS.items():
                given = getattr(inp, name)
                if given is not None:
                    self._bind(s, col, given, tag_pos)
            self._params[s] = source_params(src)
        self._unit_of_source = np.array(
            [self.unit_ids.index(u.id) for u, _ in config.sources()], np.int64)
        self._unit_power_tag = np.full(len(self.unit_ids), -1, np.int64)
        self._unit_power_const = np.zeros(len(self.unit_ids), np.float64)
        for i, unit in enumerate(config.units):
            p = unit.output.rate
            if p.tag is not None:
                self._unit_power_tag[i] = tag_pos[p.tag]
            else:
                self._unit_power_const[i] = float(p.value or 0.0)
        # A unit accounted by the emission-factor method has no minute CO2 (its CO2 comes
        # with its closed hour, compute/periods.py), and a unit whose output is a product
        # rate (t/h) no minute output in MWh: NaN, which the running totals skip.
        self._factor_unit = np.array([u.accounting_basis == "factor" for u in config.units],
                                     np.bool_)
        self._product_unit = np.array([u.output.unit != "MWh" for u in config.units],
                                      np.bool_)
        # Sources with an analyser calibration status tag (compute.qa), and that tag's row:
        # a minute in which it reads non-zero is flagged C on the source (HJ 75-2017: data
        # during calibration are not measurements of the flue gas and are excluded).
        cal = [(s, tag_pos[src.qa.calibration_tag]) for s, (_, src) in enumerate(config.sources())
               if src.qa is not None and src.qa.calibration_tag is not None]
        self._cal_src = np.array([s for s, _ in cal], np.int64)
        self._cal_tag = np.array([t for _, t in cal], np.int64)
        # A calculation minute is a minute of plant time even when minute_seconds is short.
        self.minute_h = 1.0 / 60.0

    def _bind(self, s: int, col: int, inp: Input, tag_pos: dict[str, int]) -> None:
        if inp.tag is not None:
            self._src_tag[s, col] = tag_pos[inp.tag]
        else:
            self._src_const[s, col] = float(inp.value or 0.0)

    def calibrating(self, values: npt.NDArray[np.float64], flags: npt.NDArray[np.uint8],
                    counts: npt.NDArray[np.int64], n_min: int) -> npt.NDArray[np.bool_]:
        """(minutes, sources with a calibration tag): whether any valid sample of the tag
        in the minute reads non-zero. Inputs (minutes · tags, samples) as run_kernels's.

        A sample flagged invalid (e.g. B, a failed poll) is not a reading of the status.
        """
        n_tags = counts.shape[0] // n_min
        rows = (np.arange(n_min, dtype=np.int64)[:, None] * n_tags
                + self._cal_tag[None, :]).reshape(-1)
        on = np.empty(rows.shape[0], np.bool_)
        k.any_nonzero(values, flags, counts, rows, on)
        return on.reshape(n_min, self._cal_tag.shape[0])

    def compute(self, window: Window) -> MinuteArrays:
        """Run one minute's calculation on the samples of `window`."""
        a = self.compute_batch(window.values[None], window.flags[None], window.counts[None])
        return MinuteArrays(*(x[0] for x in (
            a.tag_mean, a.tag_min, a.tag_max, a.tag_count, a.tag_flag, a.cems, a.source_flag,
            a.unit_output_mwh, a.unit_co2_kg, a.unit_flag, a.source_substitution,
            a.unit_output_flag)))

    def compute_batch(self, values: npt.NDArray[np.float64], flags: npt.NDArray[np.uint8],
                      counts: npt.NDArray[np.int64]) -> MinuteArrays:
        """Many minutes in one kernel call: inputs (minutes, tags, samples) padded as a Window.

        Every array of the result has the minutes as its first axis. Each minute's numbers
        are the same, bit for bit, as `compute` gives for it alone: the kernels work row by
        row and every row's arithmetic is the same.
        """
        n_min, n_tags = counts.shape
        n_src, n_units = len(self.source_ids), len(self.unit_ids)
        width = values.shape[2] if values.ndim == 3 else 1
        # Minute m's tags are rows m·n_tags …: shift the sources' tag indices accordingly.
        shift = (np.arange(n_min, dtype=np.int64) * n_tags)[:, None, None]
        src_tag = np.where(self._src_tag[None] >= 0, self._src_tag[None] + shift, -1)
        rows_values = np.ascontiguousarray(values.reshape(n_min * n_tags, width))
        rows_flags = np.ascontiguousarray(flags.reshape(n_min * n_tags, width))
        rows_counts = np.ascontiguousarray(counts.reshape(n_min * n_tags))
        (mean, lo, hi, count, flag), src = run_kernels(
            rows_values, rows_flags, rows_counts, self._min_valid,
            src_tag.reshape(n_min * n_src, k.N_INPUTS),
            np.ascontiguousarray(np.broadcast_to(
                self._src_const, (n_min, n_src, k.N_INPUTS)).reshape(n_min * n_src, k.N_INPUTS)),
            np.ascontiguousarray(np.broadcast_to(
                self._params, (n_min, n_src, k.N_PARAMS)).reshape(n_min * n_src, k.N_PARAMS)),
            self._t0, self._p0, self._rho, self.minute_h)
        mean, lo, hi = (x.reshape(n_min, n_tags) for x in (mean, lo, hi))
        count, flag = count.reshape(n_min, n_tags), flag.reshape(n_min, n_tags)
        cems = src.cems.reshape(n_min, n_src, k.N_OUT)
        sflag = src.flag.reshape(n_min, n_src)
        if self._cal_src.size and n_min:
            on = self.calibrating(rows_values, rows_flags, rows_counts, n_min)
            cur = sflag[:, self._cal_src]
            sflag[:, self._cal_src] = np.where(on, np.maximum(cur, CALIBRATION_FLAG), cur)
        rows = np.repeat(np.arange(n_min), n_src)
        cols = np.tile(self._unit_of_source, n_min)
        co2 = np.zeros((n_min, n_units))
        np.add.at(co2, (rows, cols), cems[:, :, k.OUT_MASS].reshape(-1))
        uflag = np.zeros((n_min, n_units), np.uint8)
        np.maximum.at(uflag, (rows, cols), sflag.reshape(-1))
        ptag = self._unit_power_tag >= 0
        pidx = np.where(ptag, self._unit_power_tag, 0)
        power = np.where(ptag[None], mean[:, pidx] if n_tags else 0.0, self._unit_power_const)
        pflag = np.ascontiguousarray(np.broadcast_to(np.where(
            ptag[None], flag[:, pidx] if n_tags else 0, 0).astype(np.uint8), (n_min, n_units)))
        uflag = np.maximum(uflag, pflag)
        output = power * self.minute_h
        if self._factor_unit.any():
            co2[:, self._factor_unit] = np.nan
        if self._product_unit.any():
            output = np.where(self._product_unit[None], np.nan, output)
        return MinuteArrays(mean, lo, hi, count, flag, cems, sflag, output, co2,
                            uflag, src.substitution.reshape(n_min, n_src), pflag)
