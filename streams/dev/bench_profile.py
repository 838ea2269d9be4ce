"""`parcours bench --profile`: py-spy samples each pipeline worker while it takes a run's
messages, so the next person sees where the time goes.

Each worker's samples are written as collapsed stacks (one line per stack: frames joined
by `;`, then its sample count), the input of flame-graph tools (speedscope, inferno,
flamegraph.pl); the bench prints the functions that hold the most samples themselves.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SAMPLES_PER_SECOND = 200


@dataclass
class Profile:
    path: str  # the collapsed stacks, or "" if py-spy could not sample
    top: list[tuple[str, float]] = field(default_factory=list)  # (function, share of samples)
    error: str = ""  # why there is no profile


def py_spy() -> str | None:
    """The py-spy executable: beside this Python (a virtualenv) or on the PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextmanager
def sampled(pids: list[int], out: Path, name: str) -> Iterator[list[Profile]]:
    """Sample each process in `pids` while the block runs; the profiles are filled in
    when it ends (out/NAME-N.txt for worker N)."""
    exe = py_spy()
    if exe is None:
        yield [Profile("", error="py-spy is not installed (pip install py-spy)")]
        return
    out.mkdir(parents=True, exist_ok=True)
    started = []
    for n, pid in enumerate(pids):
        path = out / f"{name}-{n}.txt"
        command = [exe, "record", "--pid", str(pid), "--rate", str(SAMPLES_PER_SECOND),
                   "--format", "raw", "--nonblocking", "--output", str(path)]  # fmt: skip
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        started.append((process, path))
    profiles: list[Profile] = []
    try:
        yield profiles
    finally:
        for process, path in started:
            profiles.append(_stop(process, path))


def _stop(process: subprocess.Popen, path: Path) -> Profile:
    """Stop py-spy (it writes its file on SIGINT) and read what it sampled."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        _, error = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, error = process.communicate()
    if not path.exists() or path.stat().st_size == 0:
        said = (error or "").strip().splitlines()
        return Profile("", error=said[-1] if said else f"py-spy exited {process.returncode}")
    return Profile(str(path), top_functions(path.read_text()))


def top_functions(collapsed: str, n: int = 5) -> list[tuple[str, float]]:
    """The `n` functions holding the most samples themselves (the last frame of each
    stack), with their share of all samples."""
    own: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            own[stack.rsplit(";", 1)[-1]] += int(count)
    total = sum(own.values())
    return [(frame, samples / total) for frame, samples in own.most_common(n)] if total else []
