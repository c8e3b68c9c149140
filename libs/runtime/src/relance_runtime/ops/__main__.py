"""`python -m relance_runtime.ops`: the `relance dlq` / `relance status` commands, JSON only.

Every service image ships the runtime but not the `relance` CLI, so in a cluster:
`kubectl exec deploy/relance-sender -- python -m relance_runtime.ops dlq list`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from relance_runtime.clock import SystemClock
from relance_runtime.errors import RelanceError
from relance_runtime.ops import LetterId, Ops, open_ops
from relance_runtime.settings import CommonSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m relance_runtime.ops",
        description="Dead letters, consumer lag and backlogs (configured by RELANCE_* variables).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    dlq = commands.add_parser("dlq", help="dead letters").add_subparsers(
        dest="action", required=True
    )
    listing = dlq.add_parser("list", help="list dead letters, newest last")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--pending", action="store_true", help="only those not replayed")
    replay = dlq.add_parser("replay", help="replay dead letters to their source topic")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", action="append", dest="ids", help="partition:offset")
    which.add_argument("--all", action="store_true")
    replay.add_argument("--dry-run", action="store_true")
    commands.add_parser("status", help="consumer lag and backlogs")
    return parser


async def _run(args: argparse.Namespace, settings: CommonSettings) -> Any:
    async with open_ops(settings) as ops:
        return await _dispatch(ops, args, settings)


async def _dispatch(ops: Ops, args: argparse.Namespace, settings: CommonSettings) -> Any:
    if args.command == "status":
        report = await ops.status(SystemClock(settings.clock_offset_file).now())
        return report.as_json()
    if args.action == "list":
        letters = await ops.dead_letters(limit=args.limit, pending_only=args.pending)
        return [letter.as_json() for letter in letters]
    ids = None if args.all else [LetterId.parse(i) for i in args.ids]
    return (await ops.replay(ids, dry_run=args.dry_run)).as_json()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = asyncio.run(_run(args, CommonSettings()))
    except RelanceError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
