"""Tokens/s of LEGO routed inference vs full-depth inference, measured in one run.

Builds a default-size LEGO model (2 causal layers + 2 token-wise layers, hidden 128) and a standard
4-layer causal model of the same width, picks the routing threshold that exits the requested share
of tokens, and times teacher-forced passes over the same batch. Prints tokens/s, the speed ratios
and ``compute_cost`` (layers run per token / depth), which the routed/full ratio should track.

    python benchmarks/lego_routing_speed.py --threads 1 --exit-share 0.5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from cascadelab.models.lego import LEGOConfig, LEGOTransformer, build_lego_model, threshold_for_ratio


def timed(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each function, run round-robin (so machine-load drift hits all alike)."""
    for fn in fns.values():
        fn()
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    """Run the benchmark and print one line per variant plus the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=24)
    parser.add_argument("--exit-share", type=float, default=0.5, help="share of tokens exiting at layer 2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = LEGOConfig(vocab_size=74, hidden_size=128, intermediate_size=512, num_attention_heads=4)
    lego = LEGOTransformer.extend_from(build_lego_model(config, seed=0), 4, freeze_lower=False, seed=1)
    with torch.no_grad():  # random upper weights: the benchmark measures cost, not quality
        for p in lego.model.layers[2:].parameters():
            p.normal_(0.0, 0.06, generator=torch.Generator().manual_seed(p.numel()))
    full = build_lego_model(config.derive(num_hidden_layers=4, exit_layers=[4], exit_layer=4), seed=2)
    lego.to(args.device).eval()
    full.to(args.device).eval()

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 74, (args.batch, args.seq), generator=gen).to(args.device)
    with torch.no_grad():
        conf = torch.softmax(lego.forward_all_layers(ids, layers=[2])[0].float(), -1).amax(-1)
    threshold = threshold_for_ratio(conf, 1.0 - args.exit_share)
    routed = lego.forward_inference(ids, routing_threshold=threshold)

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def run(fn: Callable[[], object]) -> Callable[[], None]:
        def go() -> None:
            with torch.no_grad():
                fn()
            sync()

        return go

    tokens = args.batch * args.seq
    t = timed(
        {
            "LEGO routed": run(lambda: lego.forward_inference(ids, routing_threshold=threshold)),
            "LEGO full depth": run(lambda: lego(input_ids=ids, use_cache=False)),
            "4-layer causal": run(lambda: full(input_ids=ids, use_cache=False)),
        },
        args.repeats,
    )
    t_routed, t_lego_full, t_baseline = t["LEGO routed"], t["LEGO full depth"], t["4-layer causal"]

    print(f"device {args.device}, threads {args.threads}, batch {args.batch} x {args.seq} tokens")
    print(f"shallow_ratio {routed.shallow_ratio:.3f}  compute_cost {routed.compute_cost:.3f}")
    for name, seconds in t.items():
        print(f"{name:16s} {tokens / seconds:12.0f} tokens/s  ({seconds * 1e3:.2f} ms)")
    cost = routed.compute_cost
    print(f"routed / LEGO full-depth time   {t_routed / t_lego_full:.3f}  (compute_cost {cost:.3f})")
    print(f"routed / 4-layer causal time    {t_routed / t_baseline:.3f}")


if __name__ == "__main__":
    main()
