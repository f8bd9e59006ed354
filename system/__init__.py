"""Operating systems described in Python: services, file systems, the
system directory, and containerized systems."""
