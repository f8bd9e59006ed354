"""Derivations: the record, its ATerm form, hash modulo and output paths,
the derivation graph, the store monad and G-expressions."""
