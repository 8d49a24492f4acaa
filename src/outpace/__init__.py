"""outpace: lossless speculative decoding for LLMs on your own hardware."""

from outpace.errors import OutpaceError
from outpace.sampling import SamplingConfig
from outpace.types import Draft, VerifyResult

__all__ = ["Draft", "OutpaceError", "SamplingConfig", "VerifyResult"]
__version__ = "0.1.0"
