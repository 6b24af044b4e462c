"""`make demo`: a local broker, the topics, a worker and simulated traffic with incidents.

Ctrl-C stops what the demo started (the simulator, the worker, and the broker if it was not running
before). Event time runs 10x faster than the clock, so one-minute windows close every six seconds; the
example alert rules (deploy/alert-rules.yaml) learn their reference in the first hour of event time (six
minutes), then catch the incidents.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .broker import LocalBroker
from .settings import Settings
from .topics import create_topics, topic_name

EXAMPLE_RULES = Path(__file__).resolve().parents[2] / "deploy" / "alert-rules.yaml"
DEMO_DEFAULTS = {
    # Demo labels arrive within minutes; windows (and the alert rules' 30-minute views) stay 30 minutes.
    "MODELMON_JOIN_HORIZON_S": "1800",
    "MODELMON_IDLE_ADVANCE_S": "5",
    "MODELMON_STORE": "memory",
    "MODELMON_ALERT_RULES": str(EXAMPLE_RULES) if EXAMPLE_RULES.exists() else "",
}
# After the rules' reference hour (event time), so every detector is armed when they start.
INCIDENTS = (
    # all along: churn is 20 points worse for requests from Brazil (the error analysis' worst slice)
    "accuracy_drop@0+86400:0.2:model=churn:segment=country/br",
    "accuracy_drop@4200+900:0.15:model=fraud-detector",
    "latency_spike@5400+600:3.0:model=churn",
    "traffic_drop@6600+600:0.5:model=price-regressor",
    "feature_missing@7800+600:0.5:model=fraud-detector:feature=amount",
)


def _first_incident_s() -> float:
    """Event-time start of the first incident (``KIND@START+DURATION:...``) that is not there all along."""
    return min(float(spec.split("@")[1].split("+")[0]) for spec in INCIDENTS if "segment=" not in spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modelmon demo", description=__doc__)
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many wall seconds")
    parser.add_argument("--speed", type=float, default=20.0, help="event-time seconds per wall second (20)")
    parser.add_argument("--rate", type=float, default=20.0, help="predictions per event-time second (20)")
    args = parser.parse_args(argv)

    env = dict(os.environ)
    for name, value in DEMO_DEFAULTS.items():
        env.setdefault(name, value)
    settings = Settings.from_env(env)
    home = Path(settings.home)
    home.mkdir(parents=True, exist_ok=True)

    broker = LocalBroker(settings)
    started_broker = settings.uses_local_broker and broker.pid() is None
    broker.start()
    create_topics(settings)

    worker_log = home / "demo-worker.log"
    worker_env = {k: v for k, v in env.items() if not k.startswith("MODELMON_")}
    worker_env.update(settings.to_env())
    with worker_log.open("ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "modelmon.cli", "worker", "--loglevel", "info"],
            env=worker_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    print(
        f"\nmodelmon demo: worker pid {worker.pid} (log {worker_log}), broker at {settings.bootstrap}.\n"
        f"Incidents (event time from the start): {', '.join(INCIDENTS)}\n"
        "Where to look:\n"
        f"  {settings.web_url}/                # the dashboard (the first incident shows after about "
        f"{_first_incident_s() / args.speed / 60:.0f} min)\n"
        f"  {settings.web_url}/api/v1/models   # the HTTP API; {settings.web_url}/metrics for Prometheus\n"
        f"  kcat -b {settings.bootstrap} -C -t {topic_name(settings, 'model-metrics')} -o end -u\n"
        f"  kcat -b {settings.bootstrap} -C -t {topic_name(settings, 'dead-letter')} -o end -u\n"
        "  modelmon alerts --follow          # alerts of the example rules (deploy/alert-rules.yaml)\n"
        f"  tail -f {worker_log}\n"
        "Ctrl-C stops the demo.\n",
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.seconds is not None:
        threading.Timer(args.seconds, stop.set).start()
    try:
        return _simulate(settings, args, stop, worker)
    finally:
        print("stopping the demo...", flush=True)
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        if started_broker:
            broker.stop()


def _simulate(
    settings: Settings, args: argparse.Namespace, stop: threading.Event, worker: subprocess.Popen
) -> int:
    from .commands import _KafkaSink
    from .simulate import SimConfig, parse_incident, run

    cfg = SimConfig(
        models=3, rate=args.rate, speed=args.speed, incidents=tuple(parse_incident(i) for i in INCIDENTS)
    ).resolved()
    last = [0.0]

    def progress(p) -> None:
        if worker.poll() is not None:
            print(f"the worker exited with code {worker.returncode}; see its log", flush=True)
            stop.set()
        if time.monotonic() - last[0] >= 10:
            last[0] = time.monotonic()
            print(f"simulator: sent {p.sent} events, event time +{p.sim_offset_s:,.0f} s", flush=True)

    run(cfg, _KafkaSink(settings), realtime=True, progress=progress, stop=stop)
    return 0 if worker.poll() is None else 1


if __name__ == "__main__":
    sys.exit(main())
