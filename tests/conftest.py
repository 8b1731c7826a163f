"""Shared fixtures: real servers on loopback, one import line per fake module."""

# Each fake module under tests/fakes/ defines its fixtures; they are made visible here.
