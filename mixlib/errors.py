"""The errors mixlib raises for bad input, each with a message naming the problem."""

from __future__ import annotations


class ConfigError(ValueError):
    """A workflow config that cannot run, naming the offending key (:mod:`mixlib.plan`)."""


class DatasetError(ValueError):
    """A dataset that cannot be used, with a message naming the file and the problem."""
