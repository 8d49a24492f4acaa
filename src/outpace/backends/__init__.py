"""Backends: the only code that touches a model's internals (weights, KV cache, attention masks)."""

from outpace.backends.base import Backend, Capabilities, ForwardOutput

__all__ = ["Backend", "Capabilities", "ForwardOutput"]
