"""Realise derivations: schedule builds, run them in a sandbox of Linux
namespaces, register their outputs, check reproducibility; and the runtime
that boots a system in a container."""
