"""Errors with a meaning for the command line: ConfigError, CheckpointError -> exit 2,
TrainingError -> exit 1,
EnvironmentFailure (and file-system OSErrors) -> exit 3, TrackingOutage -> exit 4."""


class ConfigError(ValueError):
    """Bad configuration or input (unknown key, wrong type, missing file). Exit code 2."""


class DataError(ConfigError):
    """A dataset is missing or malformed; the message names the files looked for. Exit code 2."""


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged or not a state dict amm wrote; the message names its
    path. Exit code 2 (bad input, as a ConfigError), never loaded."""


class TrainingError(RuntimeError):
    """Training failed (NaN/inf loss, diverged). The run is failed, never a number. Exit code 1."""


class EnvironmentFailure(RuntimeError):
    """The machine failed, not the input: disk full, read-only or unwritable folder. Exit code 3."""


class TrackingOutage(RuntimeError):
    """The tracking server stayed unreachable; the sweep stopped cleanly to resume. Exit code 4."""
