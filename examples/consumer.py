#!/usr/bin/env python3
"""A minimal Orderly pull consumer, on the Python client (clients/python).

Standard library only; runs from a fresh clone. Usage:

    ORDERLY_URL=http://127.0.0.1:8080 ORDERLY_TOKEN=... \
        python3 examples/consumer.py --queue emails

The client's consumer loop long-polls claim, runs `handle` while a heartbeat
extends the lease of long jobs, and reports outcomes in batches (riding on
the next claim). Jobs of one lane are never handed out concurrently, so each
lane is processed in seq order. Delivery is at-least-once: make `handle`
idempotent (e.g. keyed by the job id).
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients" / "python"))

from orderly_client import Client, Consumer, Job  # noqa: E402


def handle(job: Job) -> dict:
    """Your work goes here. The return value becomes the job's result; an
    exception fails the attempt (retried with the queue's backoff)."""
    print(f"seq={job.seq} key={job.key!r} attempt={job.attempts} "
          f"payload={json.dumps(job.payload)}", flush=True)
    return {"processed": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("ORDERLY_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--token", default=os.environ.get("ORDERLY_TOKEN"),
                        help="a JWT from /v1/auth/login or an API key (ok_…)")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--wait-ms", type=int, default=20000)
    parser.add_argument("--max-jobs", type=int, default=10)
    parser.add_argument("--exit-when-idle", action="store_true",
                        help="stop after a claim that returns no job")
    args = parser.parse_args()
    if not args.token:
        sys.exit("set ORDERLY_TOKEN or pass --token")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    consumer = Consumer(Client(args.url, args.token), args.queue, handle,
                        max_jobs=args.max_jobs, wait_ms=args.wait_ms)
    try:
        consumer.run(exit_when_idle=args.exit_when_idle)
    except KeyboardInterrupt:  # run() has reported what was done
        pass


if __name__ == "__main__":
    main()
