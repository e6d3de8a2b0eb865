"""User-facing errors: each carries one clear message and becomes exit code 2 in the CLI."""


class ConfigError(ValueError):
    """A mistake in user input (scenario, catalog entry, trace, calibration file)."""
