"""The content-addressed store: store paths, NAR, the database, adding,
querying, verifying and collecting garbage.  Nothing here knows about
derivations except as text it stores."""
