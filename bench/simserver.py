"""``otpguard serve`` with an accelerated clock, for the attack simulator (bench only).

    python bench/simserver.py --port 8123 --speed 30 --start 1800000000 --t0 12345.6

Builds the app exactly as ``otpguard serve`` does (settings from the ``OTPGUARD_*``
environment, validated by ``check_startup``, one uvicorn worker, no proxy headers)
but hands it the clock

    clock() = start + jump + (time.monotonic() - t0) * speed

``time.monotonic()`` is the system-wide CLOCK_MONOTONIC on Linux, so the simulator
computes the same simulated time in its own process from the same ``--start`` and
``--t0``. ``jump`` lets the simulator skip idle days (between building a population of
returning customers and the scenario): it writes the new total jump, in simulated
seconds, to ``--control``; a watcher thread applies it and writes it back to
``<control>.ack``. Only a bench can reach this: production has no such file.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script from bench/, whose http.py would shadow the standard library's ``http``.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402 - after the sys.path change above
import threading  # noqa: E402 - after the sys.path change above
import time  # noqa: E402 - after the sys.path change above

from otpguard.cli import configure_logging  # noqa: E402 - after the sys.path change above
from otpguard.config import load_settings  # noqa: E402 - after the sys.path change above
from otpguard.startup import check_startup  # noqa: E402 - after the sys.path change above
from otpguard.web.app import create_app  # noqa: E402 - after the sys.path change above


class AcceleratedClock:
    def __init__(self, start: float, t0: float, speed: float) -> None:
        self.start, self.t0, self.speed = start, t0, speed
        self.jump = 0.0

    def __call__(self) -> float:
        return self.start + self.jump + (time.monotonic() - self.t0) * self.speed


def watch_jumps(clock: AcceleratedClock, control: Path, stop: threading.Event) -> None:
    seen = 0.0
    while not stop.wait(0.01):
        try:
            mtime = control.stat().st_mtime
        except FileNotFoundError:
            continue
        if mtime == seen:
            continue
        text = control.read_text().strip()
        if not text:
            continue  # caught between the truncate and the write
        seen = mtime
        clock.jump = float(text)
        control.with_name(control.name + ".ack").write_text(text)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--speed", type=float, required=True)
    p.add_argument("--start", type=float, required=True, help="simulated epoch at --t0")
    p.add_argument("--t0", type=float, required=True, help="time.monotonic() at --start")
    p.add_argument("--control", type=Path, required=True)
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1"):
        p.error("the simulator's server listens on loopback only")

    clock = AcceleratedClock(args.start, args.t0, args.speed)
    settings = check_startup(load_settings())
    configure_logging("WARNING")
    app = create_app(settings, clock=clock)
    stop = threading.Event()
    watcher = threading.Thread(target=watch_jumps, args=(clock, args.control, stop), daemon=True)
    watcher.start()
    print(f"simserver on http://{args.host}:{args.port} at {args.speed:g}x", file=sys.stderr)
    try:
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
        )
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
