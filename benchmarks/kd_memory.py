"""Peak memory and time of a large-vocabulary distillation loss: dense vs chunked, forward + backward.

    python benchmarks/kd_memory.py [--tokens 4096] [--hidden 1024] [--vocab 32768 65536 131072] [--chunk 512]

dense:   logits = h_s W_s^T and h_t W_t^T for all N tokens, then kdutils.losses.kl_divergence, backward;
chunked: kdutils.token_losses.chunked_kl_divergence(h_s, W_s, teacher_hidden=h_t, teacher_weight=W_t),
         which never builds an (N, V) tensor.

Each (method, V) runs in a fresh process, so one measurement's memory never counts in another's.
On the CPU the peak is the process's peak resident memory (getrusage) minus what it held once the
inputs existed (hidden states, weights); on a GPU, torch.cuda.max_memory_allocated minus the
inputs. Time is one forward + backward after one warm-up. Prints a table and the chunked/dense ratios.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024          # Linux: KiB


def measure(method: str, V: int, N: int, D: int, chunk: int) -> dict:
    import torch
    from kdutils import losses, runtime, token_losses

    device = runtime.device()
    g = torch.Generator(device=device).manual_seed(0)
    h_s = torch.randn(N, D, device=device, generator=g).requires_grad_()
    W_s = (0.02 * torch.randn(V, D, device=device, generator=g)).requires_grad_()
    h_t = torch.randn(N, D, device=device, generator=g)
    W_t = 0.02 * torch.randn(V, D, device=device, generator=g)

    def step():
        if method == "dense":
            with torch.no_grad():
                z_t = h_t @ W_t.T
            loss = losses.kl_divergence(h_s @ W_s.T, z_t)
        else:
            loss = token_losses.chunked_kl_divergence(h_s, W_s, teacher_hidden=h_t, teacher_weight=W_t, chunk_size=chunk)
        loss.backward()
        h_s.grad = W_s.grad = None
        return loss.item()

    if device.type == "cuda":
        torch.cuda.synchronize(); base = torch.cuda.memory_allocated(); torch.cuda.reset_peak_memory_stats()
    else:
        base = rss_mib()
    step()                                                     # warm-up (allocator, kernels)
    t0 = time.perf_counter()
    value = step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device.type == "cuda" else rss_mib() - base
    return {"method": method, "V": V, "N": N, "D": D, "device": str(device), "peak MiB": peak, "seconds": seconds, "loss": value}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--vocab", type=int, nargs="+", default=[32768, 65536, 131072])
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--one", nargs=2, metavar=("METHOD", "V"), help=argparse.SUPPRESS)    # internal: one measurement
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.tokens, args.hidden, args.chunk)))
        return
    import pandas as pd

    rows = []
    for V in args.vocab:
        for method in ("dense", "chunked"):
            done = subprocess.run([sys.executable, __file__, "--one", method, str(V), "--tokens", str(args.tokens),
                                   "--hidden", str(args.hidden), "--chunk", str(args.chunk)], capture_output=True, text=True)
            if done.returncode:
                rows.append({"method": method, "V": V, "peak MiB": float("nan"), "seconds": float("nan"),
                             "error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1][:120]})
            else:
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows).set_index(["V", "method"])
    chunked, dense = table.xs("chunked", level="method"), table.xs("dense", level="method")
    ratios = pd.DataFrame({"peak memory chunked/dense": chunked["peak MiB"] / dense["peak MiB"],
                           "time chunked/dense": chunked["seconds"] / dense["seconds"]})
    print(f"\n{args.tokens} tokens, hidden {args.hidden}, chunk {args.chunk}, forward + backward, teacher given as hidden states + weight")
    print(table[["peak MiB", "seconds"]].round(2).to_string())
    print(ratios.round(3).to_string())
    print("goal at the largest V: peak memory <= 0.25x dense, time <= 1.3x dense")


if __name__ == "__main__":
    main()
