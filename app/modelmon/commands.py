"""Implementations of the CLI commands: thin plumbing over broker, topics, simulate and the SDK."""

from __future__ import annotations

import argparse
import sys
import time

from .settings import Settings


def broker_command(args: argparse.Namespace, settings: Settings) -> int:
    from .broker import LocalBroker

    broker = LocalBroker(settings)
    if args.action == "start":
        broker.start()
        return 0
    if args.action == "stop":
        broker.stop()
        return 0
    if args.action == "status":
        status = broker.status()
        where = "external cluster" if status.external else "local broker"
        pid = f", pid {status.pid}" if status.pid else ""
        print(
            f"{where} at {status.bootstrap}: {'running' if status.running else 'not running'}{pid} "
            f"({status.detail})"
        )
        return 0 if status.running else 3
    if args.action == "logs":
        if not settings.uses_local_broker:
            print(f"Using the configured cluster at {settings.bootstrap}; there is no local broker log.")
            return 0
        for line in broker.tail_log(args.lines):
            print(line)
        if args.follow:
            _follow(broker.log_file)
        return 0
    raise AssertionError(args.action)


def _follow(path) -> None:
    with path.open("rb") as fh:
        fh.seek(0, 2)
        while True:
            line = fh.readline()
            if line:
                sys.stdout.write(line.decode("utf-8", "replace"))
                sys.stdout.flush()
            else:
                time.sleep(0.3)


def topics_command(args: argparse.Namespace, settings: Settings) -> int:
    from .topics import ALL_TOPICS, check_copartitioned, create_topics, describe_partitions, topic_name

    if args.action == "create":
        changes = {}
        if args.partitions:
            changes["input_partitions"] = args.partitions
        if args.output_partitions:
            changes["output_partitions"] = args.output_partitions
        if args.replication_factor:
            changes["replication_factor"] = args.replication_factor
        settings = settings.with_(**changes) if changes else settings
        for result in create_topics(settings):
            verb = "created" if result.created else "exists "
            print(f"{verb}  {result.name}  ({result.partitions} partitions)")
        return 0
    if args.action == "list":
        counts = describe_partitions(settings)
        for base in ALL_TOPICS:
            name = topic_name(settings, base)
            print(f"{name}\t{counts[name] if name in counts else 'missing'}")
        return 0
    if args.action == "check":
        n = check_copartitioned(settings)
        print(
            f"ok: {topic_name(settings, 'predictions')} and {topic_name(settings, 'ground-truth')} "
            f"are co-partitioned ({n} partitions each)"
        )
        return 0
    raise AssertionError(args.action)


def worker_command(args: argparse.Namespace, settings: Settings) -> int:
    from .worker import run_worker

    changes = {}
    for attr in ("worker_id", "web_port", "store"):
        value = getattr(args, attr, None)
        if value is not None:
            changes[attr] = value
    return run_worker(settings.with_(**changes) if changes else settings, loglevel=args.loglevel)


class _KafkaSink:
    """Sends simulator events through the SDK's producer (murmur2, idempotent) without re-validating."""

    def __init__(self, settings: Settings) -> None:
        from .client import MonitorClient

        self.client = MonitorClient(settings, validate=False)

    def send(self, event) -> None:
        self.client.send_raw(event.topic, event.key, event.value())

    def flush(self) -> None:
        self.client.flush()


def simulate_command(args: argparse.Namespace, settings: Settings) -> int:
    import signal
    import threading

    from .errors import UsageError
    from .simulate import LabelDelay, SimConfig, parse_incident, run

    try:
        incidents = tuple(parse_incident(text) for text in args.incident)
        cfg = SimConfig(
            models=args.models,
            rate=args.rate,
            count=args.count,
            duration_s=args.duration,
            label_fraction=args.label_fraction,
            label_delay=LabelDelay(median_s=args.label_delay, early_fraction=args.early_label_fraction),
            duplicate_fraction=args.duplicate_fraction,
            relabel_fraction=args.relabel_fraction,
            invalid_fraction=args.invalid_fraction,
            error_fraction=args.error_fraction,
            incidents=incidents,
            seed=args.seed,
            speed=args.speed,
        ).resolved()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    sink = _KafkaSink(settings)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def progress(p) -> None:
        if not args.quiet:
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(p.by_kind.items()))
            print(
                f"sent {p.sent} ({kinds}) at {p.rate:,.0f} events/s, event time +{p.sim_offset_s:,.0f} s",
                flush=True,
            )

    if not args.quiet:
        print(
            f"Simulating {args.models} model(s) into {settings.bootstrap} (seed {cfg.seed}); Ctrl-C stops.",
            flush=True,
        )
    stats = run(cfg, sink, realtime=not args.no_realtime, progress=progress, stop=stop)
    print(
        f"done: {stats.sent} events ({stats.predictions} predictions, {stats.ground_truth} labels, "
        f"{stats.invalid} invalid) in {stats.elapsed_s:.1f} s; seed {stats.seed}",
        flush=True,
    )
    return 0


def rules_command(args: argparse.Namespace, settings: Settings) -> int:
    """`modelmon rules check FILE` validates; `modelmon rules backtest FILE` tries the rules offline."""
    from .alerts.rules import load_rules

    rules = load_rules(args.file, settings.window_s)  # RulesError: the CLI prints every problem, exit 2
    if args.action == "check":
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(_kind_counts(rules.rules).items()))
        print(f"{args.file}: {len(rules.rules)} rules OK ({kinds or 'none'})")
        return 0
    return _backtest(args, settings, rules)


def _kind_counts(rules) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rule in rules:
        counts[rule.kind] = counts.get(rule.kind, 0) + 1
    return counts


def _backtest(args: argparse.Namespace, settings: Settings, rules) -> int:
    """Run the rules over simulated traffic offline (the worker's pure core) and print the alerts."""
    from .alerts.backtest import Backtest, BacktestEvent
    from .alerts.follow import format_alert, format_json
    from .errors import UsageError
    from .simulate import LabelDelay, SimConfig, generate, parse_incident

    try:
        cfg = SimConfig(
            models=args.models,
            versions=args.versions,
            rate=args.rate,
            duration_s=args.duration,
            label_delay=LabelDelay(median_s=args.label_delay, sigma=0.5, max_s=max(120.0, args.label_delay)),
            invalid_fraction=0.0,
            incidents=tuple(parse_incident(text) for text in args.incident),
            seed=args.seed,
            start_ts=args.start,
        ).resolved()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    bt = Backtest(rules, window_s=settings.window_s, horizon_s=settings.join_horizon_s)
    started = time.monotonic()
    printed = 0
    for event in generate(cfg):
        if event.kind != "invalid":
            bt.add(BacktestEvent(event.kind, event.payload))  # type: ignore[arg-type]
        for alert in bt.alerts[printed:]:
            print(format_json(alert) if args.json else format_alert(alert), flush=True)
        printed = len(bt.alerts)
    bt.finish()
    for alert in bt.alerts[printed:]:
        print(format_json(alert) if args.json else format_alert(alert), flush=True)
    print(
        f"backtest: {args.duration:g} s of event time, {len(bt.alerts)} alert events "
        f"({sum(a['state'] == 'firing' for a in bt.alerts)} firing), {bt.evaluations} evaluations, "
        f"seed {cfg.seed}, {time.monotonic() - started:.1f} s",
        file=sys.stderr,
    )
    return 0
