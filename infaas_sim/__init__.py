"""INFaaS-py simulator: a SimPy cluster driven by profiles and traces.

Public API: :func:`simulate` (one run from :class:`SimInputs`), :class:`SimSettings` (the
``sim`` config group), :class:`Arrivals` (an arrival source), :class:`RunResult`.
The command line is :mod:`infaas_sim.cli` (``infaas-sim``).
"""

from infaas_sim.config import Arrivals, SimInputs, SimSettings
from infaas_sim.run import RunResult, simulate

__all__ = ["Arrivals", "RunResult", "SimInputs", "SimSettings", "simulate"]
