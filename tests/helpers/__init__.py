"""Helpers shared by the tests: real derivations and host inspection."""
