"""Where a population computes: ``device="auto"`` (CUDA when available, else CPU).

A worker process's setup (its threads, its allocator) is :mod:`netrace.backends`'s."""

from __future__ import annotations

import torch

from netrace.errors import UserError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> cuda if available else cpu; ``"cpu"``, ``"cuda"``, ``"cuda:1"`` as given.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UserError(f"unknown device {device!r}; allowed: auto, cpu, cuda, cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for CUDA but torch sees no GPU here; "
                        "use device='auto' or 'cpu'")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device {device!r}; allowed: auto, cpu, cuda, cuda:N")
    return dev
