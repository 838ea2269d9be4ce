"""The in-process core of another commit, timed on the same events as this one's.

`parcours bench --compare REF` checks REF out into a git worktree (under the bench's
work folder) and times both cores in fresh child processes on one file of pre-encoded
messages, alternately for `--rounds` rounds: the ratio compares code, not machines or
moments. On a shared machine one run can be a third slower than the next, so each tree's
figure is its best round (the one least disturbed, as `timeit` advises), and the rounds
and the machine's idle share are reported with it. Each child runs the `Core` of its
own tree (`streams.dev.bench_core`, or `streams.dev.bench` in trees from before that
module, back to the layout move), with that tree's default configuration.

With `--instructions N`, each core also runs under valgrind's callgrind over the first N
messages, and once over none: the difference is the CPU instructions the core spent,
which, unlike seconds, do not depend on what else the machine is doing (two counts of
one tree differ by about 0.1% over 3,000 messages). Hash seeds are fixed so both
trees hash alike.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from streams.config.settings import PROJECT_ROOT
from streams.dev.local_stack import machine_idle

# Times one core: argv = messages file, partitions; prints {"seconds", "state_bytes"}.
_TIMER = """
import sys, time, json, orjson
try:  # the core alone: a quick start-up (trees before it have the whole bench)
    from streams.dev.bench_core import Core
except ImportError:
    from streams.dev.bench import Core
raw = orjson.loads(open(sys.argv[1], "rb").read())
messages = [tuple(bytes.fromhex(x) for x in m) for m in raw]
core = Core(int(sys.argv[2]))
started = time.perf_counter()
for start in range(0, len(messages), 2000):
    core.step(messages[start : start + 2000])
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "state_bytes": core.state_bytes_per_customer()}))
"""


@dataclass
class CoreTiming:
    tree: str  # "this commit" or the ref
    events_per_second: float  # of the best round
    us_per_event: float  # of the best round
    state_bytes_per_customer: float
    rounds_us_per_event: list[float] = field(default_factory=list)  # every round, in order
    idle_share: float = 0.0  # of the machine, over all rounds of both trees
    instructions_per_event: float | None = None  # with --instructions: over its first N
    instructions_messages: int = 0  # ... that N (at most the run's messages)


class CompareError(Exception):
    pass


def paired_ratio(this: CoreTiming, then: CoreTiming) -> float:
    """The median of each round's ratio (REF's time over this commit's, timed back to
    back): steadier than the ratio of best rounds when the machine's speed drifts."""
    return statistics.median(
        b / a for a, b in zip(this.rounds_us_per_event, then.rounds_us_per_event, strict=True)
    )


def comparison(this: CoreTiming, then: CoreTiming) -> str:
    """The two cores' figures in one line, as the bench prints them."""
    return (
        f"core, this commit vs {then.tree}: {this.events_per_second:,.0f} against "
        f"{then.events_per_second:,.0f} events/s, {this.us_per_event:,.1f} against "
        f"{then.us_per_event:,.1f} µs/event (best rounds): "
        f"{then.us_per_event / this.us_per_event:.2f}x (median of the rounds' ratios "
        f"{paired_ratio(this, then):.2f}x); state {this.state_bytes_per_customer:,.0f} "
        f"against {then.state_bytes_per_customer:,.0f} bytes per key; rounds "
        f"{this.rounds_us_per_event} against {then.rounds_us_per_event} µs/event, "
        f"machine idle {this.idle_share:.0%}" + _instructions(this, then)
    )


def _instructions(this: CoreTiming, then: CoreTiming) -> str:
    if this.instructions_per_event is None or then.instructions_per_event is None:
        return ""
    return (
        f"; CPU instructions per event over the first {this.instructions_messages:,} "
        f"messages (callgrind): {this.instructions_per_event:,.0f} "
        f"against {then.instructions_per_event:,.0f}: "
        f"{then.instructions_per_event / this.instructions_per_event:.2f}x"
    )


def worktree(ref: str, folder: Path) -> Path:
    """REF checked out (detached) at folder/REF; reused if already there."""
    if not (PROJECT_ROOT / ".git").exists():
        raise CompareError("--compare needs a git checkout of parcours (not an installed wheel)")
    target = folder / ref.replace("/", "_")
    if not (target / "streams").exists():
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "worktree", "add", "--detach", "--force",
             str(target), ref],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode:
            raise CompareError(f"--compare {ref}: git worktree add failed: {done.stderr.strip()}")
    return target


def _run_core(
    tree: Path, messages_file: Path, partitions: int, what: str, under: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """`tree`'s core over the messages file in a child process (started by `under`, a
    tool that runs a command, if given), with that tree's code, schemas and defaults."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PARCOURS_SCHEMAS_DIR": str(tree / "schemas")}
    env.pop("PARCOURS_CONFIG", None)
    if under:
        env["PYTHONHASHSEED"] = "0"  # both trees hash alike under the counter
    done = subprocess.run(
        [*under, sys.executable, "-c", _TIMER, str(messages_file), str(partitions)],
        capture_output=True, text=True, env=env, cwd=tree,
    )  # fmt: skip
    if done.returncode:
        raise CompareError(f"{what} the core of {tree.name} failed:\n{done.stderr[-2000:]}")
    return done


def time_core(tree: Path, messages_file: Path, partitions: int) -> dict:
    done = _run_core(tree, messages_file, partitions, "timing")
    return json.loads(done.stdout.strip().splitlines()[-1])


def count_instructions(tree: Path, messages_file: Path, partitions: int) -> int:
    """CPU instructions of a child running `tree`'s core over the messages file, start-up
    included, counted by callgrind."""
    callgrind = ("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null")
    done = _run_core(tree, messages_file, partitions, "counting", callgrind)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise CompareError(f"callgrind gave no count for {tree.name}:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def instructions_per_event(
    trees: list[tuple[str, Path]],
    messages: list[tuple[bytes, bytes]],
    partitions: int,
    work: Path,
    say: Callable[[str], None],
) -> dict[str, float]:
    """Per tree: the instructions its core spends per message of `messages` (the count
    over them less the count over none, which is start-up)."""
    if shutil.which("valgrind") is None:
        raise CompareError("--instructions needs valgrind (Debian: apt install valgrind)")
    some, none = work / "core-messages-counted.json", work / "core-messages-none.json"
    write_messages(some, messages)
    write_messages(none, [])
    runs = [(tree, file) for _, tree in trees for file in (some, none)]
    say(
        f"    counting instructions: {len(messages):,} messages and none under callgrind, "
        f"{', '.join(name for name, _ in trees)}"
    )
    # A count does not depend on what else runs, so the children share the cores.
    with ThreadPoolExecutor(max_workers=min(len(runs), os.cpu_count() or 1)) as pool:
        counts = list(pool.map(lambda run: count_instructions(run[0], run[1], partitions), runs))
    pairs = zip(trees, counts[::2], counts[1::2], strict=True)
    return {name: (over - start) / max(1, len(messages)) for (name, _), over, start in pairs}


def write_messages(path: Path, messages: list[tuple[bytes, bytes]]) -> None:
    path.write_bytes(orjson.dumps([[k.hex(), v.hex()] for k, v in messages]))


def compare_cores(
    messages: list[tuple[bytes, bytes]],
    events: int,
    partitions: int,
    ref: str,
    work: Path,
    rounds: int = 3,
    say: Callable[[str], None] = lambda _: None,
    instructions: int = 0,
) -> list[CoreTiming]:
    """This commit's core and REF's, each in a fresh process per round, alternately, on
    the same messages; each figure is the tree's best round. With `instructions`, each
    core's instructions per event over that many first messages too."""
    work = work.resolve()  # the children run in their own trees
    messages_file = work / "core-messages.json"
    work.mkdir(parents=True, exist_ok=True)
    write_messages(messages_file, messages)
    trees = [("this commit", PROJECT_ROOT), (ref, worktree(ref, work / "worktrees"))]
    seconds: dict[str, list[float]] = {name: [] for name, _ in trees}
    state_bytes: dict[str, float] = {}
    idle_before, total_before = machine_idle()
    for round_ in range(1, rounds + 1):
        for name, tree in trees:
            figures = time_core(tree, messages_file, partitions)
            seconds[name].append(figures["seconds"])
            state_bytes[name] = figures["state_bytes"]
            us = figures["seconds"] / events * 1e6
            say(f"    round {round_}/{rounds}, {name}: {us:,.1f} µs/event")
    idle, total = machine_idle()
    idle_share = (idle - idle_before) / max(1, total - total_before)
    counted = (
        instructions_per_event(trees, messages[:instructions], partitions, work, say)
        if instructions
        else {}
    )
    timings = []
    for name, _ in trees:
        best = min(seconds[name])
        timings.append(
            CoreTiming(
                name,
                events / best,
                best / events * 1e6,
                state_bytes[name],
                [round(s / events * 1e6, 1) for s in seconds[name]],
                idle_share,
                counted.get(name),
                min(instructions, len(messages)),
            )
        )
    return timings
