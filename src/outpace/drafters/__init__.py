"""Drafters: one module per method, each behind the `Drafter` protocol of `drafters.base`."""

from outpace.drafters.base import DraftContext, Drafter

__all__ = ["DraftContext", "Drafter"]
