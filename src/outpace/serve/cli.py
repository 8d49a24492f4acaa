"""`outpace serve`: command-line registration (placeholder until the command lands)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `serve` command (not available yet)."""
