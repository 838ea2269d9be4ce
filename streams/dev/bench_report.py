"""`parcours bench`'s printed report: the figures of a run and its targets as ratios."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from streams.dev.bench_compare import comparison

if TYPE_CHECKING:
    from streams.dev.bench import Report


def print_targets(report: Report) -> None:
    """The ratios the design aims at, from this run's figures (see deploy/README.md)."""
    runs = report.throughput
    base = {f.messages_kind: f for f in runs if f.run.startswith("baseline")}
    pipe = {(f.messages_kind, f.workers): f for f in runs if f.run == "pipeline"}
    single = "1 event/message"
    enveloped = next((k for k in base if k != single), "")  # "": a run without envelopes
    print("\ntargets (ratios of this run):")
    if (single, 1) in pipe and single in base:
        ratio = pipe[single, 1].events_per_second / base[single].events_per_second
        print(f"  1 event/message: pipeline / bare Faust decode = {ratio:.2f}x (aim >= 0.8x)")
    if enveloped and (enveloped, 1) in pipe and single in base:
        ratio = pipe[enveloped, 1].events_per_second / base[single].events_per_second
        print(
            f"  {enveloped}: pipeline events/s / bare Faust single messages/s = {ratio:.2f}x "
            "(aim >= 5x)"
        )
    one = pipe.get((enveloped, 1))
    for (kind, workers), f in pipe.items():
        if kind == enveloped and workers > 1 and one is not None:
            ratio = f.events_per_cpu_second / one.events_per_cpu_second
            print(
                f"  {workers} workers vs 1: events per worker-CPU-second {ratio:.2f}x (aim "
                f"0.9-1.1x); wall clock {f.events_per_second / one.events_per_second:.2f}x, "
                f"which on {os.cpu_count()} cores measures free CPU, not scaling"
            )


def print_report(report: Report) -> None:
    print(
        f"\n{'run':<22} {'messages':<18} {'workers':>7} {'events/s':>10} "
        f"{'vs baseline':>11} {'seconds':>8} {'CPU s':>12} {'events/CPU s':>12} "
        f"{'broker CPU s':>12} {'idle':>5} {'changelog/ev':>12} {'longest batch':>13} "
        f"{'peak RSS MB':>12}"
    )
    for f in report.throughput:
        ratio = "" if f.vs_baseline is None else f"{f.vs_baseline:.2f}x"
        rss = ", ".join("-" if r is None else f"{r:.0f}" for r in f.peak_rss_mb)
        cpu = ", ".join(f"{c:.1f}" for c in f.cpu_seconds)
        workers = str(f.workers) if f.workers else "-"
        per_cpu = f"{f.events_per_cpu_second:,.0f}" if f.cpu_seconds else ""
        records = "" if f.state_records_per_event is None else f"{f.state_records_per_event:.2f}"
        idle = f"{f.idle_share:.0%}" if f.cpu_seconds else ""
        broker = f"{f.broker_cpu_seconds:.1f}" if f.cpu_seconds else ""
        longest = "" if f.longest_compute_s is None else f"≤{f.longest_compute_s:g} s"
        print(
            f"{f.run:<22} {f.messages_kind:<18} {workers:>7} {f.events_per_second:>10,.0f} "
            f"{ratio:>11} {f.seconds:>8.2f} {cpu:>12} {per_cpu:>12} {broker:>12} {idle:>5} "
            f"{records:>12} {longest:>13} {rss:>12}"
        )
    print_targets(report)
    if report.core_compared:
        print(comparison(*report.core_compared))
    if report.sink_rows_per_second:  # not measured with --core-only
        print(f"sink: {report.sink_rows_per_second:,.0f} rows/s (embedded ClickHouse)")
    print(f"state: {report.state_bytes_per_customer:,.0f} bytes per customer key (serialized)")
    for lat in report.latency:
        print(lat.summary())
    for f in report.throughput:
        for n, profile in enumerate(f.profiles):
            where = f"profile of worker {n + 1}, pipeline on {f.messages_kind}"
            if not profile.path:
                print(f"{where}: none ({profile.error})")
                continue
            print(f"{where}: {profile.path} (collapsed stacks); most samples held by")
            for function, share in profile.top:
                print(f"  {share:6.1%}  {function}")
