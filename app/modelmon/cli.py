"""The `modelmon` command: broker, topics, simulate, worker, demo.

Errors are one line on stderr with a non-zero exit: 2 for bad arguments or configuration, 1 when an
operation failed (broker did not start, topics not co-partitioned, Kafka unreachable).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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

    return parser


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
    raise UsageError(f"unknown command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
