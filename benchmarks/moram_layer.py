"""Forward+backward time and memory of RankOneMemoryLinear, side by side with
(a) a dense LoRA of the same total rank and (b) the official formulation restated plainly
(concatenate every atom each call, softmax over every atom with -inf outside the top k).

    python benchmarks/moram_layer.py [--repeats 25] [--device cpu|cuda]

Sizes: ViT-B/16 (768 -> 768, 16 images x 197 tokens) and tiny-clip (64 -> 64 attention and
64 -> 256 MLP, 64 images x 17 tokens), at 1, 5 and 10 tasks of 16 atoms (tiny-clip: 8).
Memory is what autograd keeps for the backward pass (on CUDA also the peak allocation).
Goal: ours <= 1.0x (b) everywhere and <= 1.05x (a) at 10 tasks.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from cl_bench.methods.moram import RankOneMemoryLinear


class OfficialRestated(nn.Module):
    """The official training forward: old atoms frozen, new ones trainable, concatenated every call."""

    def __init__(self, base: nn.Linear, old: int, new: int, topk: int, temperature: float) -> None:
        super().__init__()
        self.base, self.topk, self.temperature = base, topk, temperature
        self.old_A = nn.Parameter(torch.randn(old, base.in_features) * 0.02, requires_grad=False)
        self.old_B = nn.Parameter(torch.randn(base.out_features, old) * 0.02, requires_grad=False)
        self.new_A = nn.Parameter(torch.randn(new, base.in_features) * 0.02)
        self.new_B = nn.Parameter(torch.zeros(base.out_features, new))

    def forward(self, x):
        a = torch.cat([self.old_A, self.new_A], dim=0)
        b = torch.cat([self.old_B, self.new_B], dim=1)
        projection = x @ a.T
        normed = F.normalize(projection, p=2, dim=-1)
        values, index = torch.topk(normed, k=max(self.topk, 2), dim=-1)
        masked = torch.full_like(normed, float("-inf")).scatter_(-1, index, values)
        weights = F.softmax(masked / self.temperature, dim=-1)
        return self.base(x) + (projection * weights) @ b.T


class DenseLoRA(nn.Module):
    def __init__(self, base: nn.Linear, rank: int) -> None:
        super().__init__()
        self.base = base
        self.A = nn.Parameter(torch.randn(rank, base.in_features) * 0.02)
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x):
        return self.base(x) + (x @ self.A.T) @ self.B.T


def saved_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for the backward pass (distinct storages)."""
    storages: dict[int, int] = {}

    def pack(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x).sum().backward()
    return sum(storages.values())


def timed(modules: dict[str, nn.Module], inputs: list[torch.Tensor], device: torch.device) -> dict[str, tuple[float, float]]:
    """(fastest, median) forward+backward seconds per module; the modules take turns, so drift hits
    all alike. On a shared machine noise only adds time, so the fastest run is the steadiest figure.
    Every round gets a new input, as training does: on one repeated input the CPU learns torch.topk's
    branches, and topk then measures about 4x faster than it runs in training."""
    times: dict[str, list[float]] = {name: [] for name in modules}
    for round_, x in enumerate(inputs):
        for name, module in modules.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            module(x).square().mean().backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if round_ >= 3:  # the first rounds warm up
                times[name].append(time.perf_counter() - start)
    return {name: (min(values), statistics.median(values)) for name, values in times.items()}


def variants(d_in: int, d_out: int, rank: int, tasks: int, device: torch.device):
    torch.manual_seed(0)
    base = nn.Linear(d_in, d_out).to(device).requires_grad_(False)
    ours = RankOneMemoryLinear(base, rank=rank, topk=rank, temperature=0.01, threshold=0.2).to(device)
    for _ in range(tasks):
        ours.add_task()
    with torch.no_grad():
        ours.frozen_B.normal_(0, 0.02)
    official = OfficialRestated(base, rank * (tasks - 1), rank, rank, 0.01).to(device)
    lora = DenseLoRA(base, rank * tasks).to(device)
    return {"ours": ours.train(), "official (b)": official.train(), "dense LoRA (a)": lora.train()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    sizes = [("ViT-B/16 768->768", 768, 768, 16, 16 * 197), ("tiny-clip 64->64", 64, 64, 8, 64 * 17), ("tiny-clip 64->256", 64, 256, 8, 64 * 17)]
    print(f"device {device}, {torch.get_num_threads()} threads; forward+backward ms, fastest (median) of {args.repeats} interleaved runs")
    print(f"{'layer':20} {'tasks':>5} {'ours':>15} {'(b) official':>15} {'(a) LoRA':>15} {'ours/(b)':>9} {'ours/(a)':>9} {'saved MB ours/(b)/(a)':>22}")
    for label, d_in, d_out, rank, tokens in sizes:
        inputs = [torch.randn(tokens, d_in, device=device, requires_grad=True) for _ in range(args.repeats + 3)]
        for tasks in (1, 5, 10):
            modules = variants(d_in, d_out, rank, tasks, device)
            seconds = timed(modules, inputs, device)
            mb = {name: saved_bytes(m, inputs[0]) / 2**20 for name, m in modules.items()}
            o, b, a = (seconds[n] for n in ("ours", "official (b)", "dense LoRA (a)"))
            cells = " ".join(f"{t[0] * 1000:7.2f} ({t[1] * 1000:6.2f})" for t in (o, b, a))
            memory = "/".join(f"{mb[n]:.1f}" for n in ("ours", "official (b)", "dense LoRA (a)"))
            print(f"{label:20} {tasks:5d} {cells} {o[0] / b[0]:9.3f} {o[0] / a[0]:9.3f} {memory:>22}")
    print("ratios (of the fastest runs) below 1 mean ours is faster")


if __name__ == "__main__":
    main()
