"""The work, written against the pipeline's step contract (``pipeline.steps``).

- CPU step (JobB), a command: each log compressed with ``gzip -9`` for the archive;
- memory step (JobC), Python: each compressed log parsed as Common Log Format into its traffic
  (requests, server errors, bytes sent, distinct clients, busiest path), kept as the log's
  table item and as a JSON report; a file with no log line in it is rejected, with why;
- aggregate step (JobE): the run's totals and its busiest log;
- a check (JobD): every log was mostly understood (at most half its lines unparsed).
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline import ObjectRef, PipelineSteps, Step, StepRecord

LINE = re.compile(
    r'^(?P<client>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<method>[A-Z]+) (?P<path>\S+)[^"]*" '
    r"(?P<status>\d{3}) (?P<bytes>\d+|-)"
)
"""One request in Common Log Format (the Combined format's extra fields are ignored)."""


def summarise(source: Path, target: Path, obj: ObjectRef) -> dict[str, Any]:
    """The memory step: the traffic of one gzip-compressed log, streamed line by line."""
    requests = unparsed = server_errors = bytes_sent = 0
    clients: set[str] = set()
    paths: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    with gzip.open(source, "rt", encoding="utf-8", errors="replace") as lines:
        for line in lines:
            found = LINE.match(line)
            if found is None:
                unparsed += line.strip() != ""
                continue
            requests += 1
            clients.add(found["client"])
            paths[found["path"]] += 1
            statuses[found["status"]] += 1
            server_errors += found["status"].startswith("5")
            bytes_sent += 0 if found["bytes"] == "-" else int(found["bytes"])
    if requests == 0:
        raise ValueError(f"no Common Log Format line in it ({unparsed} other lines)")
    busiest, busiest_hits = paths.most_common(1)[0]
    report = {
        "log": obj.key,
        "requests": requests,
        "statuses": dict(sorted(statuses.items())),
        "top_paths": paths.most_common(10),
        "clients": len(clients),
        "bytes_sent": bytes_sent,
        "unparsed_lines": unparsed,
    }
    target.write_text(json.dumps(report, indent=2))
    return {
        "requests": requests,
        "server_errors": server_errors,
        "bytes_sent": bytes_sent,
        "clients": len(clients),
        "busiest_path": busiest,
        "busiest_path_hits": busiest_hits,
        "unparsed_lines": unparsed,
    }


def totals(items: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The aggregate step: the run's traffic over every log."""
    logs = requests = server_errors = bytes_sent = 0
    busiest_log, busiest_requests = None, -1
    for item in items:
        logs += 1
        requests += item["requests"]
        server_errors += item["server_errors"]
        bytes_sent += item["bytes_sent"]
        if item["requests"] > busiest_requests:
            busiest_log, busiest_requests = item["key"], item["requests"]
    return {
        "logs": logs,
        "requests": requests,
        "server_error_rate": round(server_errors / requests, 4) if requests else 0.0,
        "bytes_sent": bytes_sent,
        "busiest_log": busiest_log,
    }


def mostly_parsed(records: Iterable[StepRecord]) -> list[str]:
    """A check: no log had more unparsed lines than requests (a sign of another format)."""
    return [
        f"{record.key!r}: {record.memory['unparsed_lines']} lines unparsed, "
        f"{record.memory['requests']} requests"
        for record in records
        if record.memory["unparsed_lines"] > record.memory["requests"]
    ]


STEPS = PipelineSteps(
    cpu=Step.command("gzip -9 -c {input} > {output}", vcpus=4, memory_mib=2048),
    memory=Step.python("access_logs.steps:summarise", memory_mib=2048),
    aggregate=Step.python("access_logs.steps:totals"),
    checks=("access_logs.steps:mostly_parsed",),
)
"""The example's work: ``python -m pipeline.submit run --local --steps access_logs.steps:STEPS``."""
