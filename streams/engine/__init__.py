"""The worker's rules without Faust (see :mod:`streams.engine.engine`)."""

from streams.engine.engine import Engine, Input, LoadState, inputs_of
from streams.engine.outputs import Checkpoint, Output, Outputs
from streams.engine.progress import PartitionProgress

__all__ = [
    "Checkpoint",
    "Engine",
    "Input",
    "LoadState",
    "Output",
    "Outputs",
    "PartitionProgress",
    "inputs_of",
]
