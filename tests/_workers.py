"""Worker functions for backend tests (importable by spawned processes)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def report(ctx, folder: str) -> None:
    import torch

    Path(folder, f"{ctx.index}.txt").write_text(f"{os.getpid()} {torch.get_num_threads()}")


def fail(ctx, folder: str) -> None:
    if ctx.index == 1:
        raise ValueError("bad hyperparameter in worker 1")
    report(ctx, folder)


def user_mistake(ctx, folder: str) -> None:
    from netrace.errors import UserError

    if ctx.index == 1:
        raise UserError("narrow [search.space]: nothing in it can be built")
    report(ctx, folder)


def loop_until_stopped(ctx, folder: str) -> None:
    Path(folder, f"{ctx.index}.pid").write_text(str(os.getpid()))
    while not ctx.should_stop():
        time.sleep(0.02)
    Path(folder, f"{ctx.index}.stopped").write_text("ok")


def ignore_stop(ctx, folder: str) -> None:
    Path(folder, f"{ctx.index}.pid").write_text(str(os.getpid()))
    time.sleep(600)
