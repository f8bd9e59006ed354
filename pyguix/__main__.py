"""Run the pyguix command line as ``python -m pyguix``."""

from pyguix.cli import main

main()
