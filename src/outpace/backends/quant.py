"""Weight-only int8 / int4 execution for the torch backend, on PyTorch's own CPU kernels.

Every `nn.Linear` (lm_head included) is swapped, through the public nn.Module API, for a module
that keeps quantized weights and calls `aten._weight_int8pack_mm` (int8, per output channel,
symmetric) or `aten._weight_int4pack_mm_for_cpu` (int4, asymmetric per group of input
channels, as in gpt-fast). A quantized model is a different model: outpace's losslessness is
relative to the target *as run*, so a quantized target is compared with its own autoregressive
output, and quantizing only the draft model never changes the output at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from outpace.errors import OutpaceError

SCHEMES = ("int8", "int4")


@dataclass(frozen=True)
class QuantConfig:
    scheme: str = "int8"
    group_size: int = 128  # int4 only: input channels sharing one scale and zero point

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise OutpaceError(f"quantization must be one of {SCHEMES}, got {self.scheme!r}")
        if self.group_size not in (32, 64, 128, 256):
            raise OutpaceError(f"int4 group size must be 32, 64, 128 or 256, got {self.group_size}")

    @property
    def tag(self) -> str:
        return self.scheme if self.scheme == "int8" else f"int4g{self.group_size}"


class Int8Linear(nn.Module):
    def __init__(self, weight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("weight", weight)  # [out, in] int8
        self.register_buffer("scales", scales)  # [out]
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    @staticmethod
    def quantize(w: torch.Tensor, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """w: [out, in] -> int8 weight and per-row scales."""
        w = w.float()
        scales = w.abs().amax(1).clamp(min=1e-8) / 127.0  # [out]
        q = (w / scales[:, None]).round().clamp(-128, 127).to(torch.int8)
        return {"weight": q, "scales": scales.to(dtype)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, x.shape[-1]), self.weight, self.scales)
        y = y.reshape(*x.shape[:-1], -1)
        return y if self.bias is None else y + self.bias


class Int4Linear(nn.Module):
    def __init__(
        self, packed: torch.Tensor, scales_zeros: torch.Tensor, group_size: int, bias: torch.Tensor | None
    ) -> None:
        super().__init__()
        self.out_features = packed.shape[0]
        self.in_features = scales_zeros.shape[0] * group_size
        self.register_buffer("packed", packed)  # [out, in / 2] uint8
        self.register_buffer("scales_zeros", scales_zeros)  # [in / group, out, 2]
        self.group_size = group_size
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    @staticmethod
    def quantize(w: torch.Tensor, dtype: torch.dtype, group_size: int) -> dict[str, torch.Tensor]:
        """w: [out, in] -> packed 4-bit weight and (scale, zero) per group; dequantized value is
        (q - 8) * scale + zero, i.e. q * scale + min of the group."""
        out_f, in_f = w.shape
        g = w.float().reshape(out_f, in_f // group_size, group_size)
        lo, hi = g.amin(-1), g.amax(-1)  # [out, groups]
        scale = (hi - lo).clamp(min=1e-6) / 15.0
        q = ((g - lo[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.int32)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.reshape(out_f, in_f), 1)
        zeros = lo + 8.0 * scale
        sz = torch.stack([scale, zeros], -1).transpose(0, 1).contiguous().to(dtype)  # [groups, out, 2]
        return {"packed": packed, "scales_zeros": sz}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.packed, self.group_size, self.scales_zeros)
        y = y.reshape(*x.shape[:-1], -1)
        return y if self.bias is None else y + self.bias


def _int4_group(in_features: int, preferred: int) -> int | None:
    """The largest supported group size <= preferred that divides in_features."""
    return next((g for g in (preferred, 128, 64, 32) if g <= preferred and in_features % g == 0), None)


def quantize_model(model: nn.Module, cfg: QuantConfig, cache_file: Path | None = None) -> nn.Module:
    """Swap every nn.Linear of `model` for its quantized form, in place.

    With `cache_file`, quantized tensors are loaded from it when it exists and written to it
    otherwise, so a model is quantized once per machine.
    """
    from safetensors.torch import load_file, save_file

    cached = load_file(str(cache_file)) if cache_file is not None and cache_file.exists() else None
    dtype = next(model.parameters()).dtype
    fresh: dict[str, torch.Tensor] = {}
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name, lin in linears:
        group = _int4_group(lin.in_features, cfg.group_size) if cfg.scheme == "int4" else None
        if cached is not None:
            tensors = {k.split("::", 1)[1]: v for k, v in cached.items() if k.split("::", 1)[0] == name}
        elif group is not None:
            tensors = Int4Linear.quantize(lin.weight.data, dtype, group)
        else:  # int8, or an int4 layer whose width no group size divides
            tensors = Int8Linear.quantize(lin.weight.data, dtype)
        fresh.update({f"{name}::{k}": v for k, v in tensors.items()})
        bias = None if lin.bias is None else lin.bias.data
        new = (
            Int4Linear(tensors["packed"], tensors["scales_zeros"], group or cfg.group_size, bias)
            if "packed" in tensors
            else Int8Linear(tensors["weight"], tensors["scales"], bias)
        )
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    if cache_file is not None and cached is None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".partial")
        save_file({k: v.contiguous() for k, v in fresh.items()}, str(tmp))
        tmp.rename(cache_file)
    return model
