"""What the live end-to-end scripts (tests/live/*_e2e.py) share: the record of checks and a
poll with a deadline. Each script keeps its own `in_node`/`http_get`/`prom_query`: they differ in
network namespace, timeouts and what they return.

`results` is one list per process (a script imports it and reads it at the end; never rebind it).
"""
import time

results = []  # (name, passed) of every check, in order


def check(name, ok, detail=""):
    """Record a check and print it (`ok  ` or `FAIL`, the detail only on failure)."""
    results.append((name, bool(ok)))
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail and not ok else ""), flush=True)
    return ok


def wait_for(fn, timeout, every=0.5):
    """`fn()` every `every` seconds until it is truthy or `timeout` seconds passed; then its value
    (a last call after the deadline)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(every)
    return fn()
