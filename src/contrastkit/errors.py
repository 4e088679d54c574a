"""Exceptions raised for bad input. Every message names the problem and how to fix it."""


class ContrastkitError(Exception):
    """Base class of the errors contrastkit raises for bad input or configuration."""


class ConfigError(ContrastkitError, ValueError):
    """An invalid configuration: unknown key, bad value, impossible combination."""


class InputError(ContrastkitError, ValueError):
    """A tensor argument with the wrong shape, dtype or non-finite values."""


class DatasetError(ContrastkitError):
    """A dataset that is missing, unreadable or empty."""
