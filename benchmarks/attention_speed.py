"""手写注意力与 PyTorch 融合内核的速度对比（CPU 前向）。

比较 stage2_transformer.attention.scaled_dot_product_attention（need_weights=False 与 True 两条路径）
和 F.scaled_dot_product_attention，形状默认 B=8、H=8、L=256、d=64，无 mask、is_causal 和 bool causal mask 三种情况。
几种实现在同一个进程里轮流计时：每一轮里每种实现先不计时地跑一次，再连续跑 --calls 次取平均，
取各轮的中位数，所以机器负载的波动对几种实现大致相同；
报告的是比值（手写 / PyTorch），目标是不超过 1.3 倍。

    python benchmarks/attention_speed.py
    python benchmarks/attention_speed.py --threads 1 --repeats 50
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from roadmap import cli
from stage2_transformer.attention import causal_mask, scaled_dot_product_attention


def time_block(function, calls: int) -> float:
    """Return the mean seconds per call over `calls` back-to-back calls, after one untimed call.

    The untimed call refills the caches that the previous implementation in the round evicted.
    """
    function()
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls


def main(argv: list[str] | None = None) -> dict:
    parser = cli.ChineseArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=cli.positive_int, default=8)
    parser.add_argument("--heads", type=cli.positive_int, default=8)
    parser.add_argument("--length", type=cli.positive_int, default=256)
    parser.add_argument("--head-dim", type=cli.positive_int, default=64)
    parser.add_argument("--repeats", type=cli.positive_int, default=30, help="计时的轮数（每种实现取各轮的中位数）")
    parser.add_argument("--calls", type=cli.positive_int, default=5, help="每轮里每种实现连续调用的次数（取平均）")
    parser.add_argument("--threads", type=cli.positive_int, default=None, help="torch 线程数；不给则用默认值")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch, args.heads, args.length, args.head_dim)
    q, k, v = (torch.randn(shape, generator=generator) for _ in range(3))
    causal = causal_mask(args.length)

    rows = []
    with torch.inference_mode():
        # is_causal：两边都用 is_causal=True，手写的分块会跳过看不见的 key。
        # causal bool mask：把 causal mask 当作普通 bool mask 传进去，两边都算满整个 L×L。
        for mask_name, mask, is_causal in (("none", None, False), ("is_causal", None, True),
                                           ("causal bool mask", causal, False)):
            candidates = {
                "torch": lambda mask=mask, is_causal=is_causal: F.scaled_dot_product_attention(
                    q, k, v, attn_mask=mask, is_causal=is_causal),
                "hand (no weights)": lambda mask=mask, is_causal=is_causal: scaled_dot_product_attention(
                    q, k, v, mask, is_causal=is_causal, need_weights=False),
                "hand (with weights)": lambda mask=mask, is_causal=is_causal: scaled_dot_product_attention(
                    q, k, v, mask, is_causal=is_causal),
            }
            reference = candidates["torch"]()
            for name, function in candidates.items():
                difference = float((function()[0] if name != "torch" else function()).sub(reference).abs().max())
                if difference > 1e-4:
                    raise SystemExit(f"{name} 与 PyTorch 结果不一致：最大绝对误差 {difference:.2e}")
                for _ in range(3):  # 预热
                    function()
            timings = {name: [] for name in candidates}
            for _ in range(args.repeats):
                for name, function in candidates.items():
                    timings[name].append(time_block(function, args.calls))
            medians = {name: statistics.median(values) for name, values in timings.items()}
            for name, median in medians.items():
                rows.append({"mask": mask_name, "implementation": name, "median ms": round(median * 1e3, 2),
                             "ratio to torch": round(median / medians["torch"], 2)})

    print(f"B={args.batch} H={args.heads} L={args.length} d={args.head_dim}，threads={torch.get_num_threads()}，"
          f"torch {torch.__version__}，{platform.processor() or platform.machine()}，"
          f"{args.repeats} 轮 × 每轮 {args.calls} 次，取中位数")
    print("| mask | implementation | median ms | ratio to torch |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['mask']} | {row['implementation']} | {row['median ms']} | {row['ratio to torch']} |")
    return {"rows": rows}


if __name__ == "__main__":
    main()
