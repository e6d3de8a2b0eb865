"""User-facing errors: each carries one clear message and becomes exit code 2 in the CLI."""


class ConfigError(ValueError):
    """A mistake in user input (scenario, catalog entry, trace, calibration file)."""


def unknown_choice(what: str, value, allowed) -> str:
    """The message for a name that is not among the allowed ones, listing them."""
    return f"unknown {what} {value!r}; allowed: {', '.join(sorted(allowed))}"
