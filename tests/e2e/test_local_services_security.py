"""The local services as an attacker meets them: `python -m pipeline.local serve` in a process
of its own, reached by what is not its user's own client. A forged browser-style request, a
page of another origin in a real browser, and another user of the machine can neither run a
command nor read a byte."""

from __future__ import annotations

import http.client
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest

from helpers.cli import cli_env, serving
from helpers.paths import REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``serve --with-pipeline`` on a state folder, as a user leaves it running."""
    home = tmp_path_factory.mktemp("home")
    state = home / "state" / "services"
    with serving(REPO, cli_env(home), "--with-pipeline", f"--state-dir={state}") as (_, ready):
        yield {**ready, "state": state}


def _batch(ready: dict[str, Any]) -> Any:
    """The user's own client, signing with the services' credentials."""
    credentials = ready["credentials"]
    return boto3.client(
        "batch",
        endpoint_url=ready["endpoint"],
        region_name=ready["region"],
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
    )


def _jobs(ready: dict[str, Any]) -> list[str]:
    batch = _batch(ready)
    return [
        summary["jobId"]
        for status in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED")
        for summary in batch.list_jobs(jobQueue="ProdQueue", jobStatus=status)["jobSummaryList"]
    ]


def _submit_body(marker: Path) -> bytes:
    """JobA's SubmitJob with its command replaced by ``touch MARKER``."""
    return json.dumps(
        {
            "jobName": "JobA",
            "jobQueue": "ProdQueue",
            "jobDefinition": "JobA-list-and-validate",
            "containerOverrides": {"command": ["touch", str(marker)]},
        }
    ).encode()


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(
            {"Host": "attacker.example", "Origin": "https://attacker.example"},
            id="a rebound name with a page's origin",
        ),
        pytest.param({"Origin": "null"}, id="the services' own address from a page"),
        pytest.param({}, id="the services' own address, unsigned"),
    ],
)
def test_a_forged_text_plain_post_runs_nothing(
    served: dict[str, Any], tmp_path: Path, headers: dict[str, str]
) -> None:
    # GIVEN the request a web page can send without a CORS preflight: a text/plain POST
    marker = tmp_path / "touched"
    where = urlsplit(served["endpoint"])
    connection = http.client.HTTPConnection(where.hostname or "", where.port, timeout=10)
    # WHEN it is sent to SubmitJob, overriding JobA's command
    connection.request(
        "POST",
        "/v1/submitjob",
        body=_submit_body(marker),
        headers={"Content-Type": "text/plain", **headers},
    )
    response = connection.getresponse()
    answer = response.read()
    connection.close()
    # THEN it is refused, no job exists, and the command never ran
    assert response.status == 403, answer
    assert response.getheader("x-amzn-RequestId")
    assert _jobs(served) == []
    time.sleep(0.5)  # what a job would have had to start and touch the file
    assert not marker.exists()


def test_the_users_own_signed_client_is_served(served: dict[str, Any]) -> None:
    queues = _batch(served).describe_job_queues()["jobQueues"]
    assert [q["jobQueueName"] for q in queues] == ["ProdQueue"]


class _Page(SimpleHTTPRequestHandler):
    """A page of another origin that tries to submit a job and to read a bucket listing."""

    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_: Any) -> None:
        """Quiet."""


@pytest.mark.slow  # a real browser: a few seconds
def test_a_page_of_another_origin_can_neither_submit_nor_read(
    served: dict[str, Any], tmp_path: Path
) -> None:
    assert CHROMIUM, "Chromium is not installed: .ci/run installs Debian's chromium"
    # GIVEN a page served from another origin on this machine, whose script sends the
    # forged SubmitJob and reads the input bucket's listing, and writes what it got
    marker = tmp_path / "touched-by-page"
    endpoint = served["endpoint"]
    script = f"""
    const results = [];
    async function attempt(name, make) {{
      try {{ const r = await make(); results.push(name + ':' + r.status + ':' + await r.text()); }}
      catch (e) {{ results.push(name + ':blocked:' + e); }}
    }}
    (async () => {{
      await attempt('submit', () => fetch('{endpoint}/v1/submitjob', {{
        method: 'POST', headers: {{'Content-Type': 'text/plain'}},
        body: {json.dumps(_submit_body(marker).decode())}}}));
      await attempt('read', () => fetch('{endpoint}/'));
      document.getElementById('out').textContent = 'DONE ' + results.join(' | ');
    }})();
    """
    html = f"<html><body><pre id='out'>RUNNING</pre><script>{script}</script></body></html>"
    _Page.body = html.encode()
    page = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=page.serve_forever, daemon=True).start()
    try:
        # WHEN a real browser opens it and runs its script
        dom = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--virtual-time-budget=10000",
                "--dump-dom",
                f"http://127.0.0.1:{page.server_address[1]}/",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        ).stdout
    finally:
        page.shutdown()
    # THEN the script ran to its end, and got nothing it could read from the services
    assert "DONE " in dom, dom
    assert "submit:blocked" in dom
    assert "read:blocked" in dom
    # AND no job was submitted, and the command never ran
    assert _jobs(served) == []
    assert not marker.exists()


def _another_user() -> str | None:
    """A user of this machine who is not the services' (made here when running as root)."""
    if os.geteuid() != 0:
        return None
    name = "pipeline-neighbour"
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", name], check=True, capture_output=True)
    return name


@pytest.mark.slow  # creates a user of the machine
def test_another_user_can_read_neither_the_credentials_nor_the_journals(
    served: dict[str, Any],
) -> None:
    neighbour = _another_user()
    if neighbour is None:
        pytest.skip("needs root to create a second user of this machine")
    state: Path = served["state"]
    private = [
        state / "credentials.json",
        state / "endpoint.json",
        state / "services.journal",
        state / "batch.jsonl",
    ]
    # GIVEN the state folder and its files, private whatever the umask
    assert oct(state.stat().st_mode & 0o777) == "0o700"
    for path in private:
        assert path.exists(), path
        assert oct(path.stat().st_mode & 0o777) == "0o600", path
    # WHEN another user tries to read them, THEN each read is denied
    for path in [state, *private]:
        tried = subprocess.run(
            ["su", neighbour, "-s", "/bin/sh", "-c", f"cat {path} || ls {path}"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert tried.returncode != 0, (path, tried.stdout)
        assert "Permission denied" in tried.stderr


def test_the_services_listen_on_loopback_only(served: dict[str, Any]) -> None:
    # GIVEN the address the services print, 127.0.0.1
    endpoint = urlsplit(served["endpoint"])
    assert endpoint.hostname == "127.0.0.1"
    # THEN the port answers there, and nowhere else: Linux delivers all of 127.0.0.0/8 over
    # the loopback interface, so a socket bound to every address would answer 127.0.0.2 too
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=5):
        pass
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", endpoint.port), timeout=5)


def test_a_state_folder_open_to_others_is_never_handed_to_a_shell(tmp_path: Path) -> None:
    # GIVEN a state folder others may write to (made by someone else, or left open)
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)
    (folder / "credentials.json").write_text('{"X=1; touch /tmp/owned; Y": "v"}')
    # WHEN `env` is asked for its export line, THEN it refuses in one line, printing nothing
    # a shell would run
    tried = subprocess.run(
        [sys.executable, "-m", "pipeline.local", "env", f"--state-dir={folder}"],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (tried.returncode, tried.stdout) == (255, "")
    assert tried.stderr == (
        f"error: {folder} is open to other users (mode 777); name a state folder of your own\n"
    )


def test_serve_refuses_a_state_folder_that_is_a_link(tmp_path: Path) -> None:
    # GIVEN a state folder path that is a symbolic link (to where someone else chose)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = tmp_path / "state-link"
    link.symlink_to(elsewhere)
    # WHEN serve is started on it, THEN it refuses in one line and keeps nothing there
    tried = subprocess.run(
        [sys.executable, "-m", "pipeline.local", "serve", f"--state-dir={link}"],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert tried.returncode == 255
    assert tried.stderr == (
        f"error: {link}: not a folder of this user's own: name another state folder\n"
    )
    assert list(elsewhere.iterdir()) == []


def test_a_run_in_a_state_folder_that_is_a_link_says_how_to_name_another(
    tmp_path: Path,
) -> None:
    # GIVEN a state folder whose runs/ is a symbolic link (to where someone else chose)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "runs").symlink_to(elsewhere)
    # WHEN a local run is started there, THEN it refuses in one line saying what to set
    tried = subprocess.run(
        [sys.executable, "-m", "pipeline.submit", "--local"],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (tried.returncode, tried.stdout) == (255, "")
    assert tried.stderr == (
        f"error: {tmp_path / 'state' / 'runs'}: not a folder of this user's own: set "
        "PIPELINE_LOCAL_STATE_DIR to a folder of your own\n"
    )
    assert list(elsewhere.iterdir()) == []
