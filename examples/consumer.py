#!/usr/bin/env python3
"""A minimal Orderly pull consumer: long-poll claim, process, ack (nack on error).

Standard library only. Usage:

    ORDERLY_URL=http://127.0.0.1:8080 ORDERLY_TOKEN=... \
        python3 examples/consumer.py --queue emails

Jobs of one lane are never handed out concurrently, so processing them in the
order received keeps each lane in seq order. Delivery is at-least-once: make
`handle` idempotent (e.g. keyed by the job id).
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request


def call(base, token, method, path, body=None, timeout=40):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def handle(job):
    """Your work goes here. The return value becomes the job's result."""
    print(f"seq={job['seq']} key={job['key']!r} attempt={job['attempts']} "
          f"payload={json.dumps(job['payload'])}", flush=True)
    return {"processed": True}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("ORDERLY_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--token", default=os.environ.get("ORDERLY_TOKEN"))
    parser.add_argument("--queue", required=True)
    parser.add_argument("--wait-ms", type=int, default=20000)
    parser.add_argument("--max-jobs", type=int, default=10)
    parser.add_argument("--exit-when-idle", action="store_true",
                        help="stop after a claim that returns no job")
    args = parser.parse_args()
    if not args.token:
        sys.exit("set ORDERLY_TOKEN or pass --token")

    while True:
        status, body = call(args.url, args.token, "POST", f"/v1/queues/{args.queue}/claim",
                            {"wait_ms": args.wait_ms, "max_jobs": args.max_jobs})
        if status != 200:
            print(f"claim failed ({status}): {body.get('error')}", file=sys.stderr, flush=True)
            time.sleep(1)
            continue
        jobs = body["jobs"]
        if not jobs and args.exit_when_idle:
            return
        for job in jobs:
            try:
                outcome = ("ack", {"lease": job["lease"], "result": handle(job)})
            except Exception as err:  # a failed job is retried with backoff
                outcome = ("nack", {"lease": job["lease"], "error": str(err)})
            status, body = call(args.url, args.token, "POST", f"/v1/jobs/{job['id']}/{outcome[0]}", outcome[1])
            if status != 200:
                print(f"{outcome[0]} of {job['id']} failed ({status}): {body.get('error')}",
                      file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
