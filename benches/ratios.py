#!/usr/bin/env python3
"""Prints BENCHMARKS.md's tables from criterion's results (target/criterion), as ratios.

Usage: python3 benches/ratios.py   (after `cargo bench -p cache-memoize-benches`)
Each cell is the median time per call divided by the floor's median in the same run;
the min-max range of the per-sample times shows the noise.
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "target" / "criterion"


def stats(group, function, param):
    group = group.replace("/", "_")
    base = ROOT / group / function / str(param) if param is not None else ROOT / group / function
    estimates = json.loads((base / "new" / "estimates.json").read_text())
    sample = json.loads((base / "new" / "sample.json").read_text())
    per_iter = [t / n for t, n in zip(sample["times"], sample["iters"])]
    return estimates["median"]["point_estimate"], min(per_iter), max(per_iter)


def fmt_us(ns):
    return f"{ns / 1000:.1f} µs" if ns >= 1000 else f"{ns:.0f} ns"


def ratio_table(group, floor, others, params, label):
    print(f"\n**{group}** (floor: `{floor}`)\n")
    head = [label, f"floor median (min–max)"] + [f"{o} / floor" for o in others]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for param in params:
        try:
            f_med, f_min, f_max = stats(group, floor, param)
        except FileNotFoundError:
            continue
        cells = [str(param), f"{fmt_us(f_med)} ({fmt_us(f_min)}–{fmt_us(f_max)})"]
        for other in others:
            try:
                o_med, o_min, o_max = stats(group, other, param)
                cells.append(f"**{o_med / f_med:.2f}×** ({o_min / f_med:.2f}–{o_max / f_med:.2f})")
            except FileNotFoundError:
                cells.append("—")
        print("| " + " | ".join(cells) + " |")


def main():
    if not ROOT.exists():
        sys.exit("no criterion results: run `cargo bench -p cache-memoize-benches` first")
    sizes = [100, 10000, 1000000]
    ratio_table("hit/memory", "mutex_hashmap_bincode", ["cache_memoize"], sizes, "value bytes")
    ratio_table("hit/redis_sync", "raw_get_decode", ["cache_memoize", "cached_crate"], sizes, "value bytes")
    ratio_table("hit/redis_async", "raw_get_decode", ["cache_memoize"], sizes, "value bytes")
    ratio_table("miss/redis_sync_100B", "raw_get_set", ["cache_memoize_locked", "cache_memoize_unlocked"], [None], "")
    for group, ours, floor in [
        ("scaling/redis_sync_100B", "cache_memoize", "raw_get_decode_connection_per_thread"),
        ("scaling/redis_async_100B", "cache_memoize", None),
    ]:
        print(f"\n**{group}**: hits per second (median)\n")
        print("| threads/tasks | cache-memoize | floor | ours / floor |")
        print("|---|---|---|---|")
        for n in [1, 2, 4, 8]:
            try:
                ours_med, _, _ = stats(group, ours, n)
            except FileNotFoundError:
                continue
            row = [str(n), f"{1e9 / ours_med:,.0f}/s"]
            if floor:
                floor_med, _, _ = stats(group, floor, n)
                row += [f"{1e9 / floor_med:,.0f}/s", f"{floor_med / ours_med:.2f}×"]
            else:
                row += ["—", "—"]
            print("| " + " | ".join(row) + " |")


main()
