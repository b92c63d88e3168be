"""The vendor simulator (`fleetsync simulate`): a real HTTP server playing many vendors."""

from fleetsync.simulator.config import SimulatorConfig, VendorConfig
from fleetsync.simulator.process import SimulatorProcess
from fleetsync.simulator.server import Simulator, expected_payload, is_malformed

__all__ = [
    "Simulator",
    "SimulatorConfig",
    "SimulatorProcess",
    "VendorConfig",
    "expected_payload",
    "is_malformed",
]
