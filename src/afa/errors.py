"""User-facing errors: the CLI prints them as one line and exits with status 2."""


class UserError(Exception):
    """Bad input from the user (a file, a key, a value). Printed without a traceback."""


class ConfigError(UserError):
    """A configuration key or value that does not fit the schema."""


class DataError(UserError):
    """A data file that is missing, corrupted, or does not fit the dataset."""


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, or incompatible with the run."""


class TrainingDiverged(UserError):
    """A training loss that became NaN or infinite; the run stopped, its last finite
    checkpoint kept. Usually a learning rate too high for the model or the precision."""
