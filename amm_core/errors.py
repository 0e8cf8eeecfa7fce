"""Errors with a meaning for the command line: ConfigError -> exit 2, TrainingError -> exit 1."""


class ConfigError(ValueError):
    """Bad configuration or input (unknown key, wrong type, missing file). Exit code 2."""


class DataError(ConfigError):
    """A dataset is missing or malformed; the message names the files looked for. Exit code 2."""


class TrainingError(RuntimeError):
    """Training failed (NaN/inf loss, diverged). The run is failed, never a number. Exit code 1."""
