"""The state files' promise, tested with a real short write: a file-size limit (RLIMIT_FSIZE,
as a full disk would) makes a write fail part-way, in a process of its own. An append that
fails part-way leaves the journal as it was, so what is appended after the services start
again reads back after another start; a write-then-rename that fails leaves the old file
whole."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.local.batch.definitions import Place
from pipeline.local.batch.journal import Journal, JournalError, records, replay
from pipeline.local.batch.models import LocalBatch
from pipeline.local.batch.responses import BatchService
from pipeline.local.server import ServiceJournal, journaled_requests

LIMITED = """
import json, resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
path = Path(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 100, resource.RLIM_INFINITY))
"""


def _limited(code: str, path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` where no file may grow more than 100 bytes past ``path``'s size."""
    return subprocess.run(
        [sys.executable, "-c", LIMITED + code, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_batch_record_cut_short_leaves_the_journal_as_it_was(tmp_path: Path) -> None:
    # GIVEN a journal with two records
    path = tmp_path / "batch.jsonl"
    journal = Journal(path)
    journal.append_record("job", {"jobId": "one"})
    journal.append_record("job", {"jobId": "two"})
    journal.close()
    before = path.read_bytes()
    # WHEN a record larger than the room left is appended, and its write fails part-way
    failed = _limited(
        "from pipeline.local.batch.journal import Journal, StateWriteError\n"
        "journal = Journal(path)\n"
        "try:\n"
        "    journal.append_record('job', {'jobId': 'x' * 1000})\n"
        "except StateWriteError as error:\n"
        "    print('refused:', error)\n",
        path,
    )
    assert "refused: the run's state cannot be written" in failed.stdout, failed.stderr
    # THEN the journal is byte for byte as it was
    assert path.read_bytes() == before
    # AND what is appended once the services start again reads back after another start
    again = Journal(path)
    again.append_record("job", {"jobId": "three"})
    again.close()
    assert [r["jobId"] for r in records(path)] == ["one", "two", "three"]


def test_a_request_cut_short_leaves_the_services_journal_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "services.journal"
    journal = ServiceJournal(path)
    journal.append_request({"REQUEST_METHOD": "PUT", "PATH_INFO": "/b/one"}, b"1")
    journal.close()
    before = path.read_bytes()
    failed = _limited(
        "from pipeline.local.server import ServiceJournal\n"
        "from pipeline.local.batch.journal import StateWriteError\n"
        "journal = ServiceJournal(path)\n"
        "try:\n"
        "    journal.append_request({'PATH_INFO': '/b/big'}, b'x' * 4096)\n"
        "except StateWriteError:\n"
        "    print('refused')\n",
        path,
    )
    assert "refused" in failed.stdout, failed.stderr
    assert path.read_bytes() == before
    again = ServiceJournal(path)
    again.append_request({"REQUEST_METHOD": "PUT", "PATH_INFO": "/b/two"}, b"2")
    again.close()
    assert [e["PATH_INFO"] for e, _ in journaled_requests(path)] == ["/b/one", "/b/two"]


def test_a_write_then_rename_cut_short_leaves_the_old_file_whole(tmp_path: Path) -> None:
    # GIVEN a state file
    path = tmp_path / "steps.json"
    path.write_text(json.dumps({"kept": True}))
    before = path.read_bytes()
    # WHEN a much larger version of it is written and the write fails part-way
    failed = _limited(
        "from pipeline.local.run_folder import write_json\n"
        "try:\n"
        "    write_json(path, {'kept': False, 'filler': 'x' * 10000})\n"
        "except OSError as error:\n"
        "    print('failed:', error.errno)\n",
        path,
    )
    assert "failed:" in failed.stdout, failed.stderr
    # THEN the file is the old one, whole
    assert path.read_bytes() == before


def test_a_journaled_call_these_services_now_refuse_is_named(tmp_path: Path) -> None:
    # GIVEN a journal an earlier version wrote, holding a MANAGED EC2 compute environment
    # without the instance role AWS Batch requires
    path = tmp_path / "batch.jsonl"
    journal = Journal(path)
    request = {
        "computeEnvironmentName": "old",
        "type": "MANAGED",
        "computeResources": {"type": "EC2", "maxvCpus": 4, "subnets": ["subnet-1"]},
    }
    journal.append_record("call", {"operation": "CreateComputeEnvironment", "request": request})
    journal.close()
    backend = LocalBatch(Place("123456789012", "us-east-1"))
    # WHEN the services replay it THEN they stop with a journal error naming the call and why
    with pytest.raises(JournalError, match="CreateComputeEnvironment call these services now"):
        replay(backend, path, BatchService(backend).replay)
