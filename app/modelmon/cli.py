"""The `modelmon` command: broker, topics, simulate, worker, alerts, rules.

Errors are one line on stderr with a non-zero exit: 2 for bad arguments or configuration, 1 when an
operation failed (broker did not start, topics not co-partitioned, Kafka unreachable).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .alerts.rules import RulesError
from .errors import UsageError
from .settings import Settings, SettingsError

EXIT_FAILURE = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message instead of usage + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port between 1 and 65535, got {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="modelmon", description="Kafka-native monitor for ML models in production.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"modelmon {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    broker = sub.add_parser("broker", help="run the local Apache Kafka broker (the embedded default)")
    bsub = broker.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    bsub.required = True
    bsub.add_parser("start", help="assemble (first time), format and start the broker; wait until ready")
    bsub.add_parser("stop", help="stop the broker")
    bsub.add_parser("status", help="say whether the broker answers")
    logs = bsub.add_parser("logs", help="print the broker's log")
    logs.add_argument("-n", "--lines", type=_positive_int, default=50, help="lines to show (default 50)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")

    topics = sub.add_parser("topics", help="create and check modelmon's topics")
    tsub = topics.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    tsub.required = True
    create = tsub.add_parser("create", help="create every topic that is missing (idempotent)")
    create.add_argument("--partitions", type=_positive_int, help="partitions of the input topics (default 8)")
    create.add_argument("--output-partitions", type=_positive_int, help="partitions of the output topics")
    create.add_argument("--replication-factor", type=_positive_int, help="replication factor (default 1)")
    tsub.add_parser("list", help="list modelmon's topics and their partition counts")
    tsub.add_parser("check", help="check that predictions and ground-truth are co-partitioned")

    sim = sub.add_parser("simulate", help="produce realistic simulated traffic")
    sim.add_argument("--models", type=_positive_int, default=3, help="number of models (default 3)")
    sim.add_argument(
        "--rate", type=_positive_float, default=200.0, help="predictions per second (default 200)"
    )
    sim.add_argument("--count", type=_positive_int, help="stop after this many predictions")
    sim.add_argument("--duration", type=_positive_float, help="stop after this many seconds of event time")
    sim.add_argument("--label-fraction", type=_fraction, default=0.8, help="share of requests labelled (0.8)")
    sim.add_argument(
        "--label-delay",
        type=_positive_float,
        default=30.0,
        help="median label delay in event-time seconds (default 30)",
    )
    sim.add_argument(
        "--early-label-fraction",
        type=_fraction,
        default=0.02,
        help="share of labels sent before their prediction (default 0.02)",
    )
    sim.add_argument(
        "--duplicate-fraction", type=_fraction, default=0.01, help="share of re-sent events (0.01)"
    )
    sim.add_argument(
        "--relabel-fraction", type=_fraction, default=0.005, help="share of second labels (0.005)"
    )
    sim.add_argument(
        "--invalid-fraction", type=_fraction, default=0.005, help="share of invalid events (0.005)"
    )
    sim.add_argument(
        "--error-fraction", type=_fraction, default=0.01, help="share of inference errors (0.01)"
    )
    sim.add_argument(
        "--speed",
        type=_positive_float,
        default=1.0,
        help="event-time seconds per wall second (60 = an hour a minute)",
    )
    sim.add_argument("--seed", type=int, default=0, help="random seed: same seed, same events (default 0)")
    sim.add_argument(
        "--incident",
        action="append",
        default=[],
        metavar="SPEC",
        help="KIND@START+DURATION:MAGNITUDE[:model=NAME], e.g. accuracy_drop@600+300:0.2",
    )
    sim.add_argument("--no-realtime", action="store_true", help="send as fast as possible")
    sim.add_argument("--quiet", action="store_true", help="no progress lines")

    worker = sub.add_parser("worker", help="run the stream worker (Faust agents, tables, web server)")
    worker.add_argument("--worker-id", help="this worker's name (default MODELMON_WORKER_ID or host name)")
    worker.add_argument("--web-port", type=_port, help="web server port (default MODELMON_WEB_PORT, 6066)")
    worker.add_argument("--store", choices=("rocksdb", "memory"), help="table store (default rocksdb)")
    worker.add_argument("--loglevel", choices=("crit", "error", "warn", "info", "debug"), default="warn")

    _add_alerts_parser(sub)
    _add_rules_parser(sub)

    return parser


def _add_rules_parser(sub: argparse._SubParsersAction) -> None:
    """`modelmon rules check FILE` validates a rules file; `rules backtest FILE` tries it offline."""
    rules = sub.add_parser("rules", help="validate alert rules, or backtest them on simulated traffic")
    rsub = rules.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    rsub.required = True
    check = rsub.add_parser("check", help="validate a rules file: every problem with its rule and field")
    check.add_argument("file", help="the rules file (YAML)")
    bt = rsub.add_parser(
        "backtest",
        help="run the rules over simulated traffic offline and print the alerts they raise",
        description="Simulated traffic (with --incident specs, as `modelmon simulate` takes them) goes "
        "through the worker's pure core and alert engine without Kafka; the alerts are printed as "
        "`modelmon alerts` prints them. Use it to tune thresholds and to check the false-alarm rate "
        "before deploying rules.",
    )
    bt.add_argument("file", help="the rules file (YAML)")
    bt.add_argument("--models", type=_positive_int, default=1, help="number of simulated models (default 1)")
    bt.add_argument("--versions", type=_positive_int, default=1, help="versions per model (default 1)")
    bt.add_argument("--rate", type=_positive_float, default=5.0, help="predictions per second (default 5)")
    bt.add_argument(
        "--duration", type=_positive_float, default=6 * 3600.0, help="event-time seconds (default 21600)"
    )
    bt.add_argument(
        "--label-delay", type=_positive_float, default=5.0, help="median label delay in seconds (default 5)"
    )
    bt.add_argument(
        "--incident",
        action="append",
        default=[],
        metavar="SPEC",
        help="KIND@START+DURATION:MAGNITUDE[:model=NAME][:feature=NAME], e.g. accuracy_drop@7200+1200:0.1",
    )
    bt.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    bt.add_argument("--start", type=float, default=1_767_225_600.0, help="event time of the start (epoch s)")
    bt.add_argument("--json", action="store_true", help="print each alert as one line of JSON")


def _webhook_url(text: str) -> str:
    from .alerts.webhook import check_url

    try:
        return check_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_alerts_parser(sub: argparse._SubParsersAction) -> None:
    """`modelmon alerts [options]` prints or follows alerts; `modelmon alerts sink ...` posts them."""
    from .alerts.follow import SEVERITIES, STATES

    alerts = sub.add_parser(
        "alerts",
        help="print or follow alerts; `alerts sink` posts them to a webhook",
        usage="modelmon alerts [-h] [-f] [--json] [--model GLOB]... [--severity LEVEL] [--state STATE]... "
        "[--from-beginning]\n       modelmon alerts sink --webhook URL [options] (see `alerts sink -h`)",
        description="Print the alerts on the alerts topic and exit, or keep following it (--follow). "
        "`modelmon alerts sink --webhook URL` delivers alerts to a webhook instead.",
    )
    alerts.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing new alerts (from the end of the topic unless --from-beginning)",
    )
    alerts.add_argument("--json", action="store_true", help="print each alert as one line of JSON")
    alerts.add_argument(
        "--model",
        dest="models",
        action="append",
        default=[],
        metavar="GLOB",
        help="only models matching GLOB (repeatable)",
    )
    alerts.add_argument("--severity", choices=SEVERITIES, help="only this severity or a more urgent one")
    alerts.add_argument(
        "--state",
        dest="states",
        action="append",
        default=[],
        choices=STATES,
        help="only this state (repeatable)",
    )
    alerts.add_argument(
        "--from-beginning",
        action="store_true",
        help="with --follow: start at the oldest alert kept (without --follow, every kept alert is printed)",
    )
    asub = alerts.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    sink = asub.add_parser(
        "sink",
        prog="modelmon alerts sink",
        help="POST every alert to a webhook (JSON, or a Slack message with --slack)",
        description="Deliver alerts to a webhook from a consumer group of its own, with retries; "
        "a new group starts at the end of the topic.",
    )
    sink.add_argument("--webhook", required=True, type=_webhook_url, metavar="URL", help="http(s) URL")
    sink.add_argument("--slack", action="store_true", help="send a Slack-compatible body (text + blocks)")
    sink.add_argument(
        "--timeout", type=_positive_float, default=10.0, metavar="S", help="seconds per request (10)"
    )
    sink.add_argument(
        "--retries", type=_non_negative_int, default=5, metavar="N", help="retries per alert (5)"
    )
    sink.add_argument("--min-severity", choices=SEVERITIES, help="only this severity or a more urgent one")
    sink.add_argument(
        "--model",
        dest="sink_models",
        action="append",
        default=[],
        metavar="GLOB",
        help="only models matching GLOB (repeatable)",
    )
    sink.add_argument(
        "--state",
        dest="sink_states",
        action="append",
        default=[],
        choices=STATES,
        help="only this state (repeatable)",
    )
    sink.add_argument("--group", help="consumer group (default <prefix><app_id>-webhook)")
    sink.add_argument(
        "--from-beginning",
        dest="sink_from_beginning",
        action="store_true",
        help="a new group starts at the oldest alert kept instead of the end",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        settings = Settings.from_env()
        return _dispatch(args, settings)
    except UsageError as exc:
        print(f"modelmon: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SettingsError as exc:
        print(f"modelmon: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RulesError as exc:
        for problem in exc.problems:
            print(f"modelmon: rules error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from .errors import is_user_error

        if not is_user_error(exc):
            raise
        print(f"modelmon: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "broker":
        from .commands import broker_command

        return broker_command(args, settings)
    if args.command == "topics":
        from .commands import topics_command

        return topics_command(args, settings)
    if args.command == "simulate":
        from .commands import simulate_command

        return simulate_command(args, settings)
    if args.command == "worker":
        from .commands import worker_command

        return worker_command(args, settings)
    if args.command == "alerts":
        return _alerts_command(args, settings)
    if args.command == "rules":
        from .commands import rules_command

        return rules_command(args, settings)
    raise UsageError(f"unknown command {args.command!r}")


def _alerts_command(args: argparse.Namespace, settings: Settings) -> int:
    """Follow (or print) alerts, or run the webhook sink; SIGINT/SIGTERM stop either cleanly."""
    import signal
    import threading

    from .alerts.follow import AlertFilter

    stop = threading.Event()

    def install_stop_handlers() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())

    if args.action == "sink":
        hints = {
            "--follow": "does not apply to `alerts sink`",
            "--json": "does not apply to `alerts sink`",
            "--severity": "is spelt --min-severity after `sink`",
            "--model": "must come after `sink`",
            "--state": "must come after `sink`",
            "--from-beginning": "must come after `sink`",
        }
        given = {
            "--follow": args.follow,
            "--json": args.json,
            "--severity": args.severity,
            "--model": args.models,
            "--state": args.states,
            "--from-beginning": args.from_beginning,
        }
        for opt, value in given.items():
            if value:
                raise UsageError(f"{opt} {hints[opt]} (see `modelmon alerts sink --help`)")
        from .alerts.webhook import WebhookConfig, run_sink

        config = WebhookConfig(
            url=args.webhook, slack=args.slack, timeout_s=args.timeout, retries=args.retries
        )
        filt = AlertFilter(tuple(args.sink_models), args.min_severity, tuple(args.sink_states))
        install_stop_handlers()
        run_sink(
            settings,
            config,
            filt,
            group_id=args.group,
            from_beginning=args.sink_from_beginning,
            stop=stop,
        )
        return 0
    from .alerts.follow import run_follow

    filt = AlertFilter(tuple(args.models), args.severity, tuple(args.states))
    install_stop_handlers()
    try:
        run_follow(
            settings,
            filt,
            follow=args.follow,
            from_beginning=args.from_beginning,
            json_output=args.json,
            stop=stop,
        )
    except BrokenPipeError:
        # The reader went away (`modelmon alerts | head`): not an error; silence the final flush too.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
