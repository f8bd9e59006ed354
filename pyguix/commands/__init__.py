"""The pyguix commands, one module per command or command group.

Each module defines one click command named after the module; the command
line imports a module only when its command runs, so start-up stays close
to a bare interpreter's.
"""
