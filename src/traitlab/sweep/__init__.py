"""Sweeps: one experiment run as a grid or list of cells that share their cached stages."""

from traitlab.sweep.config import CellConfig, RayConfig, SweepConfig
from traitlab.sweep.run import run_sweep

__all__ = ["CellConfig", "RayConfig", "SweepConfig", "run_sweep"]
