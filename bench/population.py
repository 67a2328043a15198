"""Benchmark: a population of K networks trained as one batched computation, against the
same K networks trained one after another (nn.Module + torch.optim) and as a process pool.

    python bench/population.py                      # the full table (several minutes)
    python bench/population.py --families mlp --ks 256 --sample 16

Prints a markdown table (for BENCHMARKS.md). Workload, per the issue: 2,000 samples, batch
128, 5 epochs, Adam with a different learning rate per member; an MLP 32->64->64->1, a 1-D
CNN and an LSTM (hidden 32) on windows of 20 steps. Batched runs use every core as torch
threads; "one after another" runs the ordinary loop in one process with the same threads;
the pool runs one process per core with one thread each. The two baselines are linear in K,
so they are timed on ``--sample`` members and scaled to K (marked "~"). Each batched run is
a fresh process, so its peak RSS is its own. GFLOP/s counts the matrix-multiply and
convolution work of training (forward + both backward products, none for the input) and is
compared with a large fp32 ``torch.mm`` timed in the same run.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from netrace.backends import set_worker_threads  # noqa: E402
from netrace.models import CNNSpec, MLPSpec, RNNSpec  # noqa: E402
from netrace.train import MemberSpec, Population  # noqa: E402
from netrace.train._reference import train_reference  # noqa: E402

N, BATCH, EPOCHS, WINDOW = 2000, 128, 5, 20
SPECS = {
    "mlp": MLPSpec(in_features=32, hidden=(64, 64)),
    "cnn": CNNSpec(length=WINDOW, channels=(16, 16), kernel_size=3, pool="max", hidden=(32,)),
    "lstm": RNNSpec(in_features=1, cell="lstm", hidden_size=32),
}


def _data(family: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 32, generator=g) if family == "mlp" else torch.randn(N, WINDOW, generator=g)
    y = x.reshape(N, -1)[:, :4].sum(dim=1) * 0.1 + torch.randn(N, generator=g) * 0.5
    return x, y


def _members(k: int) -> list[MemberSpec]:
    # log-spaced learning rates 1e-4 .. 1e-2: a different one per member
    return [MemberSpec(seed=i, lr=10 ** (-4 + 2 * i / max(k - 1, 1))) for i in range(k)]


def train_flops(family: str) -> float:
    """Multiply-add FLOPs of one training sample of one member (forward + backward)."""
    spec = SPECS[family]
    if family == "mlp":
        dims = [spec.in_features, *spec.hidden, spec.n_outputs]
        layers = [2 * a * b for a, b in zip(dims, dims[1:])]
    elif family == "cnn":
        layers, c_in, n = [], spec.in_channels, spec.length
        for c, n_pool in zip(spec.channels, spec.conv_lengths()):
            n_conv = (n + 2 * spec.padding - spec.kernel_size) // spec.stride + 1
            layers.append(2 * c_in * spec.kernel_size * c * n_conv)
            c_in, n = c, n_pool
        dims = [spec.channels[-1] * spec.conv_lengths()[-1], *spec.hidden, spec.n_outputs]
        layers += [2 * a * b for a, b in zip(dims, dims[1:])]
    else:
        g, h = 4, spec.hidden_size
        layers = [2 * WINDOW * spec.in_features * g * h, 2 * WINDOW * h * g * h, 2 * h]
    # forward, gradient of the weights, gradient of the input (none for the first layer)
    return 3 * sum(layers) - layers[0]


def _batched(family: str, k: int, threads: int, chunk: int | None, out: mp.Queue) -> None:
    set_worker_threads(threads)
    x, y = _data(family)
    pop = Population(SPECS[family], _members(k), optimizer="adam", batch_size=BATCH, seed=0,
                     device="cpu", dtype=torch.float32, member_chunk=chunk)
    start = time.perf_counter()
    for _ in range(EPOCHS):
        pop.step_epoch(x, y)
    seconds = time.perf_counter() - start
    out.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
             pop.member_chunk))


def _sequential(family: str, members: list[MemberSpec], threads: int) -> float:
    set_worker_threads(threads)
    x, y = _data(family)
    g = torch.Generator().manual_seed(0)
    orders = [torch.randperm(N, generator=g) for _ in range(EPOCHS)]
    start = time.perf_counter()
    for m in members:
        # an ordinary nn.Module of torch's own layers, built like any single network
        module = Population(SPECS[family], [m], device="cpu").member_module(0)
        module = module.float()
        train_reference(module, "adam", m, x, y, orders=orders, batch_size=BATCH)
    return time.perf_counter() - start


def _pool_worker(args: tuple[str, list[MemberSpec]]) -> float:
    family, members = args
    return _sequential(family, members, threads=1)


def _pool(family: str, members: list[MemberSpec], cores: int) -> float:
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(cores) as pool:
        pool.map(_pool_worker, [(family, members[i::cores]) for i in range(cores)])
    return time.perf_counter() - start


def _in_child(target, *args):  # noqa: ANN001, ANN202
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    result = q.get()
    p.join()
    return result


def mm_gflops(threads: int, n: int = 4096, reps: int = 5) -> float:
    """The fp32 matrix-multiply rate of this machine, best of ``reps`` (GFLOP/s)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def _fastest(fns, reps: int) -> float:
    """The median time of the fastest of ``fns`` (each warm, ``reps`` timings)."""
    best = math.inf
    for f in fns:
        f(), f()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            f()
            times.append(time.perf_counter() - start)
        best = min(best, sorted(times)[reps // 2])
    return best


def mlp_products_seconds(k: int, reps: int = 15) -> float:
    """A lower bound for an engine built on torch's batched products, MLP workload: the seconds its hidden layers'
    matrix products alone take, each timed warm (operands in cache) in the fastest of every
    layout (either operand transposed or not, the result transposed or not; a batch shared by
    all members also as one wide product), for every step of the run. The output layer (one
    unit), the losses, activations and the optimizer are left out, so an engine needs more."""
    spec = SPECS["mlp"]
    dims = [spec.in_features, *spec.hidden, spec.n_outputs]
    full, last = divmod(N, BATCH)

    def variants(m: int, kk: int, n: int) -> list:
        # (m, kk) @ (kk, n) per member, in every layout
        a, b = torch.randn(k, m, kk), torch.randn(k, kk, n)
        at, bt = a.transpose(1, 2).contiguous(), b.transpose(1, 2).contiguous()
        return [lambda: torch.bmm(a, b), lambda: torch.bmm(at.transpose(1, 2), b),
                lambda: torch.bmm(a, bt.transpose(1, 2)),
                lambda: torch.bmm(at.transpose(1, 2), bt.transpose(1, 2)),
                lambda: torch.bmm(bt, at)]

    total = 0.0
    for b, count in ((BATCH, full * EPOCHS), (last, EPOCHS if last else 0)):
        if not count:
            continue
        step = 0.0
        for j, (i, o) in enumerate(zip(dims[:-1], dims[1:-1])):
            forward = variants(o, i, b)
            if j == 0:  # the shared batch: one (k*o, i) @ (i, b) product
                w, x = torch.randn(k * o, i), torch.randn(i, b)
                forward.append(lambda: w @ x)
            step += _fastest(forward, reps)
            step += _fastest(variants(o, b, i), reps)  # weight gradient
            if j > 0:
                step += _fastest(variants(i, o, b), reps)  # input gradient
        total += step * count
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=list(SPECS), choices=list(SPECS))
    parser.add_argument("--ks", nargs="+", type=int, default=[64, 256, 1024])
    parser.add_argument("--sample", type=int, default=32,
                        help="members timed for the sequential and pool baselines")
    parser.add_argument("--chunk", type=int, default=None, help="member_chunk (default: auto)")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--repeat", type=int, default=1,
                        help="time everything this many times and keep the fastest (the "
                             "machines are shared; the minimum is the least disturbed run)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rate = mm_gflops(cores)
    print(f"machine: {cores} cores, torch {torch.__version__}, fp32 mm rate "
          f"{rate:.0f} GFLOP/s (4096x4096, {cores} threads)\n")
    print("| model | K | batched s | member-epochs/s | vs one after another | vs pool "
          "| one after another s | pool s | peak RSS MB | chunk | GFLOP/s | % of mm |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    bounds = []
    for family in args.families:
        per_sample = train_flops(family) * N * EPOCHS
        for k in args.ks:
            if family == "mlp":
                bound = mlp_products_seconds(k)
                bounds.append(f"| {k} | {bound:.2f} | {100 * per_sample * k / bound / 1e9 / rate:.0f}% "
                              f"| {{seq}} |")
            runs = [_in_child(_batched, family, k, cores, args.chunk) for _ in range(args.repeat)]
            seconds = min(r[0] for r in runs)
            rss, chunk = max(r[1] for r in runs), runs[0][2]
            gflops = per_sample * k / seconds / 1e9
            seq = pool = math.nan
            if not args.no_baselines:
                sample = _members(k)[:: max(1, k // min(k, args.sample))][: args.sample]
                scale = k / len(sample)
                seq = min(_sequential(family, sample, cores) for _ in range(args.repeat)) * scale
                pool = min(_pool(family, sample, cores) for _ in range(args.repeat)) * scale
            mark = "~" if args.sample < k else ""
            print(f"| {family} | {k} | {seconds:.2f} | {k * EPOCHS / seconds:.0f} "
                  f"| {seq / seconds:.1f}x | {pool / seconds:.1f}x | {mark}{seq:.1f} "
                  f"| {mark}{pool:.1f} | {rss:.0f} | {chunk} | {gflops:.1f} | {100 * gflops / rate:.0f}% |",
                  flush=True)
            if family == "mlp":
                bounds[-1] = bounds[-1].format(seq=f"{seq / bound:.1f}x")
    if bounds:
        print("\nMLP hidden layers' products alone, each warm in its fastest layout (a lower bound "
              "on the batched time; see mlp_products_seconds):\n")
        print("| K | products alone s | % of mm at that time | one after another / products alone |")
        print("|---|---|---|---|")
        print("\n".join(bounds))
    again = mm_gflops(cores)
    print(f"\nfp32 mm rate again at the end: {again:.0f} GFLOP/s (the % column uses the first)")
    print(f"member chunk: {args.chunk or 'auto'}; baselines timed on {args.sample} members "
          f"and scaled to K where marked ~; fastest of {args.repeat} run(s) each.")


if __name__ == "__main__":
    main()
