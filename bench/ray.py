"""pictale on Ray Serve (`pictale serve --ray`): throughput of 2 worker replicas vs 1, the latency Ray adds to a
request, and an 8-page book on 2 replicas vs 1. One run prints every figure.

Three servers, each on the tiny SD 1.5 demo (`--model tiny`), each in its own data dir under a temp dir:

- Ray, 1 worker replica: (1) throughput, (2) latency, (3) book;
- Ray, 2 worker replicas: (1) throughput, (3) book;
- plain `pictale serve` (OMP_NUM_THREADS=1): (2) latency, up beside the 1-replica Ray server for that phase.

Every worker replica runs one torch thread (PICTALE_RAY_THREADS_PER_REPLICA=1) and asks Ray for 0.8 CPU, the
ingress for 0.2 (two replicas and the ingress fit a 2-core machine; Ray schedules nothing beyond its CPUs).

1. Throughput: a closed loop of 4 clients (each posts its next `/sdapi/v1/txt2img` when the last answered; 192 px,
   8 steps, Euler, CFG 7: about 0.4 s an image on one thread) for a fixed count after a warm-up; images/s
   on 2 replicas over images/s on 1 (target >= 1.7x). Meanwhile the CPU the server's processes use (from /proc:
   the worker replicas, the ingress, Serve's HTTP proxy, the rest of Ray) and this process's client threads, in
   cores: what the replicas share the machine with.
2. Added latency: sequential single requests (64 px, 2 steps: the per-request cost dominates), alternating between
   the 1-replica Ray server and the plain server (the order flips every round) after a warm-up; p50 of each and
   the difference (target <= 15 ms). Each request is followed by a `GET /v1/server`, which the ingress answers
   alone: the share of the added time that is the HTTP proxy and the ingress, not the call to the worker.
3. Book: `POST /v1/books` with 8 pages, 2 candidates a page (192 px, 8 steps; the tiny CLIP scores them, as the
   tiny model pairs with it), timed from the POST to the job's `done` event on its SSE stream, 3 books (median)
   after a small warm-up book (loads the CLIP scorer); 1 replica over 2 replicas (target >= 1.6x). The books run
   pages side by side only where the queue has a worker per replica (`queue.workers`; its book fan-out).

Each server is stopped with SIGTERM and waited for; the last line says whether any Ray process started by this
run (raylet, gcs_server, workers) is left. Ray runs loopback-only: the script re-runs itself inside a new network
namespace with only `lo` up (`unshare -n`, needs root; `--no-netns` to skip), with Ray's usage stats and auth off.

    PYTHONPATH=src HF_HUB_OFFLINE=1 .venv/bin/python bench/ray.py [--quick] [--out figures.json]

The servers run the pictale that PYTHONPATH names (else this checkout's src/); the first line says which.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from live_server import PAGES, PROMPTS, free_port

ROOT = Path(__file__).resolve().parents[1]
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
SERVER_ENV = {
    **RAY_ENV,
    "HF_HUB_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "PICTALE_RAY_THREADS_PER_REPLICA": "1",
    "PICTALE_RAY_CPUS_PER_REPLICA": "0.8",
    "PICTALE_RAY_INGRESS_CPUS": "0.2",
    "PICTALE_RAY_MAX_ONGOING": "1",
    "PICTALE_QUEUE_SIZE": "256",
}
CLIENTS = 4


# -- processes ---------------------------------------------------------------------------------------------------
def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _parents() -> dict[int, int]:
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                # the field after the ")" that closes the command name: state, then the parent's pid
                out[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    return out


def descendants(pid: int) -> dict[int, str]:
    """{pid: command line} of every process below `pid` (Ray's raylet, gcs_server and workers under a server)."""
    parents = _parents()
    found, frontier = {}, [pid]
    while frontier:
        p = frontier.pop()
        for child, parent in parents.items():
            if parent == p and child not in found:
                found[child] = _cmdline(child)
                frontier.append(child)
    return found


def ray_processes() -> dict[int, str]:
    """Every raylet / gcs_server process on the machine (ours or anyone's)."""
    out = {}
    for pid in _parents():
        cmd = _cmdline(pid)
        if "raylet" in cmd.split(" ", 1)[0] or "gcs_server" in cmd.split(" ", 1)[0]:
            out[pid] = cmd
    return out


def pythonpath() -> str:
    """The servers run the pictale the caller's PYTHONPATH names, else this checkout's src/."""
    return os.environ.get("PYTHONPATH") or str(ROOT / "src")


def pictale_source() -> str:
    code = "import pictale, pathlib; print(pathlib.Path(pictale.__file__).parent)"
    env = {**os.environ, "PYTHONPATH": pythonpath()}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip()


class Server:
    """`pictale serve` (plain, or `--ray` with `replicas` worker replicas) as a subprocess, log in its data dir."""

    def __init__(self, label: str, data: Path, replicas: int | None) -> None:
        self.label, self.data, self.replicas = label, data, replicas
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        data.mkdir(parents=True)
        self.log = data / "server.log"
        cmd = [sys.executable, "-m", "pictale", "serve"]
        cmd += ["--ray"] if replicas else []
        cmd += ["--model", "tiny", "--data-dir", str(data), "--port", str(self.port)]
        env = {**os.environ, **SERVER_ENV, "PYTHONPATH": pythonpath()}
        if replicas:
            env["PICTALE_RAY_REPLICAS"] = str(replicas)
        self.started = time.perf_counter()
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.base, timeout=600, trust_env=False)
        self.children: dict[int, str] = {}

    def wait_ready(self, timeout: float) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.label} exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                if self.http.get("/v1/server", timeout=2).status_code == 200:
                    took = time.perf_counter() - self.started
                    print(f"{self.label}: up after {took:.0f} s", flush=True)
                    return took
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"{self.label} did not answer within {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def replica_jobs(self) -> dict[str, int]:
        """Jobs done per worker (replica id, or "local"), from `/v1/metrics` (open mode: the local caller is admin)."""
        r = self.http.get("/v1/metrics")
        r.raise_for_status()
        return {str(rep["replica"]): int(rep.get("jobs") or 0) for rep in r.json()["replicas"]}

    def stop(self, timeout: float = 120) -> list[str]:
        """SIGTERM, wait; problems as lines (a kill, a non-zero exit, processes left below it)."""
        problems = []
        self.children = descendants(self.proc.pid)
        self.http.close()
        t0 = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(30)
            problems.append(f"{self.label}: no exit {timeout:.0f} s after SIGTERM, killed")
        if rc not in (0, -signal.SIGTERM):
            problems.append(f"{self.label}: exit status {rc} after SIGTERM")
        left = self.left_over(wait=30)
        for pid, cmd in left.items():
            problems.append(f"{self.label}: process {pid} left: {cmd[:160]}")
        core = sorted({name for name in ("raylet", "gcs_server") for cmd in self.children.values() if name in cmd})
        print(
            f"{self.label}: stopped in {time.perf_counter() - t0:.1f} s (rc {rc}); {len(self.children)} processes "
            f"ran below it ({', '.join(core) or 'no Ray core'}), {len(left)} left",
            flush=True,
        )
        return problems

    def left_over(self, wait: float = 0) -> dict[int, str]:
        """The processes that ran below the server and still run (same pid and command line)."""
        deadline = time.perf_counter() + wait
        while True:
            left = {pid: cmd for pid, cmd in self.children.items() if cmd and _cmdline(pid) == cmd}
            if not left or time.perf_counter() >= deadline:
                return left
            time.sleep(0.5)


# -- load --------------------------------------------------------------------------------------------------------
def txt2img(size: int, steps: int, i: int) -> dict:
    return {
        "prompt": PROMPTS[i % len(PROMPTS)],
        "steps": steps,
        "width": size,
        "height": size,
        "cfg_scale": 7.0,
        "sampler_name": "Euler",
        "seed": 1000 + i,
    }


def closed_loop(base: str, clients: int, count: int, size: int, steps: int, first: int = 0) -> float:
    """`count` txt2img over `clients` threads, each sending its next when the last answered; images/s."""
    lock = threading.Lock()
    todo = iter(range(first, first + count))
    errors: list[BaseException] = []

    def client() -> None:
        with httpx.Client(base_url=base, timeout=600, trust_env=False) as http:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None or errors:
                    return
                try:
                    http.post("/sdapi/v1/txt2img", json=txt2img(size, steps, i)).raise_for_status()
                except BaseException as exc:  # reported below; the other clients stop
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return count / (time.perf_counter() - t0)


ROLES = (("PictaleWorker", "replicas"), ("PictaleIngress", "ingress"), ("ProxyActor", "proxy"))
"""Ray names its actor processes `ray::ServeReplica:APP:DEPLOYMENT` / `ray::ProxyActor`; the rest is "ray"."""


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_by_role(server: Server) -> dict[str, float]:
    """CPU seconds used so far by the server's processes (the driver, Ray's core, its actors), by role."""
    out = {"replicas": 0.0, "ingress": 0.0, "proxy": 0.0, "ray": cpu_seconds(server.proc.pid)}
    for pid, cmd in descendants(server.proc.pid).items():
        role = next((name for key, name in ROLES if key in cmd), "ray")
        out[role] += cpu_seconds(pid)
    out["clients"] = time.process_time()  # this process: the client threads
    return out


def throughput(server: Server, args: argparse.Namespace) -> dict:
    closed_loop(server.base, CLIENTS, args.warmup, args.size, args.steps)  # every replica loads and warms up
    before, cpu0, t0 = server.replica_jobs(), cpu_by_role(server), time.perf_counter()
    rate = closed_loop(server.base, CLIENTS, args.requests, args.size, args.steps, first=10_000)
    wall, cpu1, after = time.perf_counter() - t0, cpu_by_role(server), server.replica_jobs()
    spread = {k[-8:]: after[k] - before.get(k, 0) for k in after}
    cores = {role: (cpu1[role] - cpu0[role]) / wall for role in cpu1}
    load = os.getloadavg()[0]
    print(
        f"{server.label}: {rate:.2f} images/s ({args.requests} images, {CLIENTS} clients); jobs per replica {spread}; "
        f"load average {load:.2f}; cores busy: " + ", ".join(f"{role} {c:.2f}" for role, c in cores.items()),
        flush=True,
    )
    return {"images_per_s": rate, "jobs_per_replica": spread, "load_average": load, "cores_busy": cores}


def p50(values: list[float]) -> float:
    return statistics.median(values)


def latency(ray: Server, plain: Server, args: argparse.Namespace) -> dict:
    """Sequential single requests, alternating servers (order flipping each round): txt2img, and `GET /v1/server`
    (answered by the ingress alone: the HTTP proxy's and the ingress's share of the added time)."""
    gen: dict[str, list[float]] = {ray.label: [], plain.label: []}
    info: dict[str, list[float]] = {ray.label: [], plain.label: []}
    size, steps = args.latency_size, args.latency_steps
    for r in range(args.latency_warmup + args.latency_requests):
        for server in (ray, plain) if r % 2 == 0 else (plain, ray):
            t0 = time.perf_counter()
            server.http.post("/sdapi/v1/txt2img", json=txt2img(size, steps, r)).raise_for_status()
            t1 = time.perf_counter()
            server.http.get("/v1/server").raise_for_status()
            if r >= args.latency_warmup:
                gen[server.label].append(t1 - t0)
                info[server.label].append(time.perf_counter() - t1)
    ms = {
        "ray_p50_ms": p50(gen[ray.label]),
        "plain_p50_ms": p50(gen[plain.label]),
        "ray_p90_ms": statistics.quantiles(gen[ray.label], n=10)[-1],
        "plain_p90_ms": statistics.quantiles(gen[plain.label], n=10)[-1],
        "ray_server_info_p50_ms": p50(info[ray.label]),
        "plain_server_info_p50_ms": p50(info[plain.label]),
    }
    out = {k: v * 1000 for k, v in ms.items()}
    out["added_p50_ms"] = out["ray_p50_ms"] - out["plain_p50_ms"]
    out["added_server_info_p50_ms"] = out["ray_server_info_p50_ms"] - out["plain_server_info_p50_ms"]
    print(
        f"latency ({size} px, {steps} steps, {args.latency_requests} each): Ray 1 replica p50 "
        f"{out['ray_p50_ms']:.1f} ms (p90 {out['ray_p90_ms']:.1f}), plain p50 {out['plain_p50_ms']:.1f} ms "
        f"(p90 {out['plain_p90_ms']:.1f}); GET /v1/server p50: Ray {out['ray_server_info_p50_ms']:.1f} ms, "
        f"plain {out['plain_server_info_p50_ms']:.1f} ms; load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    return out


def book_body(size: int, steps: int, seed: int) -> dict:
    return {
        "story": "\n\n".join(PAGES),
        "style": "children's book illustration, watercolor",
        "candidates": 2,
        "width": size,
        "height": size,
        "steps": steps,
        "sampler": "Euler a",
        "seed": seed,
    }


def run_book(server: Server, body: dict) -> float:
    """POST the book, follow its job's SSE stream to the end; seconds from the POST to `done`."""
    t0 = time.perf_counter()
    r = server.http.post("/v1/books", json=body)
    if r.status_code != 202:
        raise SystemExit(f"{server.label}: POST /v1/books {r.status_code}: {r.text}")
    book_id = r.json()["id"]
    end = None
    with server.http.stream("GET", f"/v1/jobs/{book_id}/events") as events:
        for line in events.iter_lines():
            if line.startswith("event:") and line.split(":", 1)[1].strip() in ("done", "failed", "cancelled"):
                end = line.split(":", 1)[1].strip()
                break
    took = time.perf_counter() - t0
    view = server.http.get(f"/v1/books/{book_id}").json()
    if end != "done" or view["state"] != "done" or view["pages_done"] != len(PAGES):
        raise SystemExit(f"{server.label}: the book ended {end!r}: {json.dumps(view)[:2000]}")
    return took


def book(server: Server, args: argparse.Namespace) -> dict:
    run_book(server, book_body(64, 2, 1))  # loads the CLIP scorer (on the replicas it reaches)
    before = server.replica_jobs()
    times = [run_book(server, book_body(args.size, args.steps, 100 + i)) for i in range(args.book_rounds)]
    after = server.replica_jobs()
    spread = {k[-8:]: after[k] - before.get(k, 0) for k in after}
    load = os.getloadavg()[0]
    print(
        f"{server.label}: 8-page book {', '.join(f'{t:.1f}' for t in times)} s; jobs per replica {spread}; "
        f"load average {load:.2f}",
        flush=True,
    )
    return {"seconds": statistics.median(times), "rounds": times, "jobs_per_replica": spread, "load_average": load}


# -- main --------------------------------------------------------------------------------------------------------
def in_netns(argv: list[str]) -> None:
    """Re-run this script in a new network namespace with only `lo` up (nothing but loopback to bind or reach)."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        raise SystemExit("unshare -n needs root and the `unshare` and `ip` tools; or run with --no-netns")
    os.environ["PICTALE_BENCH_NETNS"] = "1"
    script = 'ip link set lo up && exec "$0" "$@"'
    os.execvp("unshare", ["unshare", "-n", "--", "sh", "-c", script, sys.executable, *argv])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a dry run: few requests, small images, one book round")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    ap.add_argument("--no-netns", action="store_true", help="do not re-run inside `unshare -n`")
    ap.add_argument("--size", type=int, default=192, help="throughput and book image size, px")
    ap.add_argument("--steps", type=int, default=8, help="throughput and book steps")
    ap.add_argument("--requests", type=int, default=48, help="timed throughput requests per server")
    ap.add_argument("--start-timeout", type=float, default=400, help="seconds a server may take to answer")
    args = ap.parse_args()
    if not args.no_netns and not os.environ.get("PICTALE_BENCH_NETNS"):
        in_netns(sys.argv)
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    args.warmup, args.book_rounds = 2 * CLIENTS, 3
    args.latency_size, args.latency_steps, args.latency_warmup, args.latency_requests = 64, 2, 5, 30
    if args.quick:
        args.size, args.steps, args.requests, args.warmup, args.book_rounds = 64, 2, 8, CLIENTS, 1
        args.latency_warmup, args.latency_requests = 2, 8

    t_start = time.perf_counter()
    load_before = os.getloadavg()
    print(
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f} at the start; tiny SD 1.5; throughput and book "
        f"{args.size} px, {args.steps} steps; {CLIENTS} clients; {args.requests} timed requests a server",
        flush=True,
    )
    source = pictale_source()
    print(f"pictale from {source}", flush=True)
    figures: dict = {
        "source": source,
        "cpus": os.cpu_count(),
        "size": args.size,
        "steps": args.steps,
        "quick": args.quick,
    }
    problems: list[str] = []
    servers: list[Server] = []  # running
    started: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="pictale-bench-ray-") as tmp:
        try:
            # Phase A: Ray with 1 replica, and the plain server beside it for the latency rows.
            ray1 = Server("ray 1 replica", Path(tmp) / "ray1", replicas=1)
            plain = Server("plain", Path(tmp) / "plain", replicas=None)
            servers += [ray1, plain]
            started += [ray1, plain]
            figures["start_s"] = {"ray1": ray1.wait_ready(args.start_timeout), "plain": plain.wait_ready(120)}
            figures["latency"] = latency(ray1, plain, args)
            problems += plain.stop()
            servers.remove(plain)
            figures["throughput_1"] = throughput(ray1, args)
            figures["book_1"] = book(ray1, args)
            problems += ray1.stop()
            servers.remove(ray1)
            # Phase B: Ray with 2 replicas.
            ray2 = Server("ray 2 replicas", Path(tmp) / "ray2", replicas=2)
            servers.append(ray2)
            started.append(ray2)
            figures["start_s"]["ray2"] = ray2.wait_ready(args.start_timeout)
            figures["throughput_2"] = throughput(ray2, args)
            figures["book_2"] = book(ray2, args)
            problems += ray2.stop()
            servers.remove(ray2)
        finally:
            for server in servers:  # a failure above: stop what still runs, keep its log's tail
                print(f"--- {server.label} log (tail) ---\n{server.tail()}", file=sys.stderr)
                problems += server.stop()

    ours: set[int] = set()
    ours_left: dict[int, str] = {}
    for server in started:  # every process that ran below one of our servers, if it still runs
        ours |= set(server.children)
        ours_left.update(server.left_over())
    others = [pid for pid in ray_processes() if pid not in ours]
    load_after = os.getloadavg()
    figures["load_average"] = {"start": load_before[0], "end": load_after[0]}
    figures["ray_processes_left"] = len(ours_left)
    figures["problems"] = problems
    lat = figures["latency"]
    thr = figures["throughput_2"]["images_per_s"] / figures["throughput_1"]["images_per_s"]
    book_x = figures["book_1"]["seconds"] / figures["book_2"]["seconds"]
    figures.update(throughput_ratio=thr, book_speedup=book_x)

    print(f"\n== pictale on Ray Serve, tiny SD 1.5, {os.cpu_count()} CPUs ({time.perf_counter() - t_start:.0f} s)")
    one, two = figures["throughput_1"]["images_per_s"], figures["throughput_2"]["images_per_s"]
    print(
        f"throughput ({args.size} px, {args.steps} steps, {CLIENTS} clients): 1 replica {one:.2f} images/s, "
        f"2 replicas {two:.2f} images/s"
    )
    print(f"2 replicas / 1 replica = {thr:.2f}x (target >= 1.7x)")
    for n in (1, 2):
        busy = figures[f"throughput_{n}"]["cores_busy"]
        print(
            f"  cores busy meanwhile, {n} replica{'s' if n > 1 else ''}: "
            + ", ".join(f"{k} {v:.2f}" for k, v in busy.items())
        )
    print(
        f"added p50 = {lat['added_p50_ms']:+.1f} ms (target <= 15 ms): Ray 1 replica {lat['ray_p50_ms']:.1f} ms, "
        f"plain {lat['plain_p50_ms']:.1f} ms ({args.latency_size} px, {args.latency_steps} steps, "
        f"{args.latency_requests} sequential requests each)"
    )
    print(
        f"  the HTTP proxy and the ingress alone (GET /v1/server, no worker call) add "
        f"{lat['added_server_info_p50_ms']:+.1f} ms ({lat['ray_server_info_p50_ms']:.1f} vs "
        f"{lat['plain_server_info_p50_ms']:.1f} ms)"
    )
    b1, b2 = figures["book_1"]["seconds"], figures["book_2"]["seconds"]
    print(f"8-page book: 2 replicas {b2:.1f} s vs 1 replica {b1:.1f} s = {book_x:.2f}x faster (target >= 1.6x)")
    print(f"load average {load_before[0]:.2f} at the start, {load_after[0]:.2f} at the end")
    if ours_left:
        print(f"Ray processes left by this run: {len(ours_left)}: " + "; ".join(c[:80] for c in ours_left.values()))
    else:
        print(
            "no raylet/gcs_server process (nor any other process that ran below the servers) left by this run; "
            f"{len(others)} raylet/gcs_server of others running on the machine"
        )
    for line in problems:
        print(f"problem: {line}")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
