"""The worker's rules without Faust (see :mod:`streams.engine.engine`)."""

from streams.engine.engine import (
    ONLINE_FAILURE_MODEL,
    Engine,
    Input,
    LoadState,
    inputs_of,
    pipeline_config,
)
from streams.engine.outputs import Checkpoint, Output, Outputs
from streams.engine.progress import PartitionProgress

__all__ = [
    "ONLINE_FAILURE_MODEL",
    "Checkpoint",
    "Engine",
    "Input",
    "LoadState",
    "Output",
    "Outputs",
    "PartitionProgress",
    "inputs_of",
    "pipeline_config",
]
