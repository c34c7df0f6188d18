"""The minute calculation: tag statistics → CEMS per source → unit output and intensity.

Pure: arrays in, arrays out. The runtime turns the arrays into records and totals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from compute import kernels as k
from compute.tagstore import Window
from server.config import Input, PlantConfig

_INPUT_COLUMNS = {
    "co2_pct": k.CO2, "temp_c": k.TEMP, "static_pa": k.STATIC, "baro_pa": k.BARO,
    "moisture_pct": k.MOIST,
}


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


class MinuteCalculator:
    """Wires a plant configuration to the kernels: which tag feeds which input."""

    def __init__(self, config: PlantConfig) -> None:
        self.tag_ids = [t.id for d in config.devices for t in d.tags]
        self.source_ids = [s.id for _, s in config.sources()]
        self.unit_ids = [u.id for u in config.units]
        tag_pos = {t: i for i, t in enumerate(self.tag_ids)}
        c = config.constants
        self._t0, self._p0, self._rho = c.t0_k, c.p0_pa, c.co2_density_kg_m3
        self._min_valid = config.clock.min_samples_per_minute
        n_src = len(self.source_ids)
        # Input (s, col) reads tag _src_tag[s, col], or the constant when that is -1.
        self._src_tag = np.full((n_src, k.N_INPUTS), -1, np.int64)
        self._src_const = np.zeros((n_src, k.N_INPUTS), np.float64)
        self._params = np.zeros((n_src, k.N_PARAMS), np.float64)
        for s, (_, src) in enumerate(config.sources()):
            inp = src.inputs
            flow = inp.velocity_m_s if inp.velocity_m_s is not None else inp.flow_act_m3_h
            assert flow is not None  # config validation guarantees one of them
            self._bind(s, k.FLOW, flow, tag_pos)
            for name, col in _INPUT_COLUMNS.items():
                self._bind(s, col, getattr(inp, name), tag_pos)
            self._params[s, k.AREA] = src.area_m2 or 0.0
            self._params[s, k.CO2_WET] = 1.0 if inp.co2_basis == "wet" else 0.0
            self._params[s, k.USE_FLOW] = 1.0 if inp.flow_act_m3_h is not None else 0.0
        self._unit_of_source = np.array(
            [self.unit_ids.index(u.id) for u, _ in config.sources()], np.int64)
        self._unit_power_tag = np.full(len(self.unit_ids), -1, np.int64)
        self._unit_power_const = np.zeros(len(self.unit_ids), np.float64)
        for i, unit in enumerate(config.units):
            p = unit.output.power_mw
            if p.tag is not None:
                self._unit_power_tag[i] = tag_pos[p.tag]
            else:
                self._unit_power_const[i] = float(p.value or 0.0)
        # A calculation minute is a minute of plant time even when minute_seconds is short.
        self.minute_h = 1.0 / 60.0

    def _bind(self, s: int, col: int, inp: Input, tag_pos: dict[str, int]) -> None:
        if inp.tag is not None:
            self._src_tag[s, col] = tag_pos[inp.tag]
        else:
            self._src_const[s, col] = float(inp.value or 0.0)

    def compute(self, window: Window) -> MinuteArrays:
        """Run one minute's calculation on the samples of `window`."""
        n_tags = len(self.tag_ids)
        mean = np.empty(n_tags)
        lo = np.empty(n_tags)
        hi = np.empty(n_tags)
        count = np.empty(n_tags, np.int64)
        flag = np.empty(n_tags, np.uint8)
        k.tag_minute_stats(window.values, window.flags, window.counts, self._min_valid,
                           mean, lo, hi, count, flag)
        bound = self._src_tag >= 0
        idx = np.where(bound, self._src_tag, 0)
        inputs = np.where(bound, mean[idx] if n_tags else 0.0, self._src_const)
        input_flags = np.where(bound, flag[idx] if n_tags else 0, 0).astype(np.uint8)
        cems = np.empty((len(self.source_ids), k.N_OUT))
        src_flag = np.empty(len(self.source_ids), np.uint8)
        k.cems_minute(inputs, input_flags, self._params, self._t0, self._p0, self._rho,
                      self.minute_h, cems, src_flag)
        n_units = len(self.unit_ids)
        co2 = np.zeros(n_units)
        np.add.at(co2, self._unit_of_source, cems[:, k.OUT_MASS])
        uflag = np.zeros(n_units, np.uint8)
        np.maximum.at(uflag, self._unit_of_source, src_flag)
        ptag = self._unit_power_tag >= 0
        pidx = np.where(ptag, self._unit_power_tag, 0)
        power = np.where(ptag, mean[pidx] if n_tags else 0.0, self._unit_power_const)
        pflag = np.where(ptag, flag[pidx] if n_tags else 0, 0).astype(np.uint8)
        uflag = np.maximum(uflag, pflag)
        return MinuteArrays(mean, lo, hi, count, flag, cems, src_flag,
                            power * self.minute_h, co2, uflag)
