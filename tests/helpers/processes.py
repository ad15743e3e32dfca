"""The processes a local run leaves on this machine, found as a user would look for them."""

from __future__ import annotations

from pathlib import Path


def run_processes(endpoint: str, state: Path) -> list[str]:
    """Every process of the local run whose services listen at ``endpoint``: the services
    (their command line names the run's state folder) and whatever carries the endpoint in
    its environment, which every job process and the fork server do."""
    found = []
    mark = f"AWS_ENDPOINT_URL={endpoint}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark in environment or ("pipeline.local serve" in cmdline and str(state) in cmdline):
            found.append(f"{entry.name}: {cmdline[:120]}")
    return found
