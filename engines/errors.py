"""The one error type a user can cause. Its message names the input and the fix; the UI shows it verbatim."""


class StudioError(ValueError):
    """Bad user input (file, config key, CLI argument). Never a programming error."""
