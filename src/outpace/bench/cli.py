"""`outpace bench`: command-line registration (placeholder until the command lands)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `bench` command (not available yet)."""
