"""Peer: Python's concurrent.futures.ProcessPoolExecutor (standard library).

max_workers = N; conc futures outstanding: whenever some complete, as many
new ones are submitted, until the time is up (then the outstanding ones
finish). Prints {"ops","calls","seconds"} as JSON on stdout.
Usage: python3 procpool.py '{"threads":2,"conc":64,"warmMs":250,"durMs":1000}'
"""

import concurrent.futures as cf
import json
import sys
import time

MSG = {"message": "hello"}


def echo(req):
    """The trivial task: echo the small dict back."""
    return {"message": req["message"]}


def drive(ex, conc, ms):
    start = time.perf_counter()
    end = start + ms / 1000
    pending = {ex.submit(echo, MSG) for _ in range(conc)}
    calls = 0
    while pending:
        done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
        more = time.perf_counter() < end
        for f in done:
            if f.result() != MSG:
                raise RuntimeError("bad reply: %r" % (f.result(),))
            calls += 1
            if more:
                pending.add(ex.submit(echo, MSG))
    seconds = time.perf_counter() - start
    return {"ops": calls / seconds, "calls": calls, "seconds": seconds}


def main():
    cfg = json.loads(sys.argv[1])
    with cf.ProcessPoolExecutor(max_workers=cfg["threads"]) as ex:
        drive(ex, cfg["conc"], cfg["warmMs"])
        res = drive(ex, cfg["conc"], cfg["durMs"])
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
