"""OCPP 1.6 charge point simulator: ``kilowatt simulate`` and :func:`run_simulation`.

Simulated charge points boot, report their statuses, run charging sessions with
meter values, and answer every CS→CP call of OCPP 1.6 the way a charge point would
(see ``docs/simulator.md``)::

    from kilowatt.simulator import SimulationConfig, load_scenario, run_simulation

    result = await run_simulation(
        SimulationConfig(
            url="ws://127.0.0.1:9000/ocpp/",
            charge_points=100,
            scenario=load_scenario("builtin"),
            duration=60,
        )
    )
"""

from kilowatt.simulator.charge_point import SimulatedChargePoint
from kilowatt.simulator.runner import (
    Simulation,
    SimulationConfig,
    SimulationError,
    SimulationResult,
    run_simulation,
)
from kilowatt.simulator.scenario import BUILTIN, Scenario, ScenarioError, load_scenario
from kilowatt.simulator.stats import SimulationStats

__all__ = [
    "BUILTIN",
    "Scenario",
    "ScenarioError",
    "SimulatedChargePoint",
    "Simulation",
    "SimulationConfig",
    "SimulationError",
    "SimulationResult",
    "SimulationStats",
    "load_scenario",
    "run_simulation",
]
