"""The pyguix command line: a thin front end over the store, derivations,
builders and system layers."""

__version__ = "0.1.0"
