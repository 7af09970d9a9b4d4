"""``taskstatus serve`` as an operator runs it: a real process, a real port, Ctrl-C."""

from __future__ import annotations

import signal

import httpx
import pytest
from click.testing import CliRunner

from taskstatus.cli import cli
from tests.cli_process import taskstatus_process
from tests.helpers import publish
from tests.ports import free_port
from tests.waiting import TIMEOUT, poll


def test_serve_answers_with_the_token_only_and_stops_on_ctrl_c(make_tracker, tmp_path):
    url = f"sqlite:///{tmp_path / 'served.db'}"
    status = publish(make_tracker(url), "served", user_id="7")
    port = free_port()
    with taskstatus_process(
        "serve", "--port", str(port), "--url", url, env={"TASKSTATUS_TOKEN": "s3cret"}
    ) as proc:
        first = proc.stdout.readline().decode()
        assert first == f"Serving the taskstatus REST API on http://127.0.0.1:{port}/api/v1/\n"
        proc.stdout.readline()  # the API description's address
        dashboard = proc.stdout.readline().decode()
        assert dashboard == f"Dashboard: http://127.0.0.1:{port}/ (sign in with the token)\n"
        base = f"http://127.0.0.1:{port}/api/v1"
        with httpx.Client(timeout=TIMEOUT) as client:

            def anonymous() -> httpx.Response | None:
                assert proc.poll() is None, proc.stdout.read().decode()
                try:
                    return client.get(f"{base}/tasks/")
                except httpx.ConnectError:
                    return None  # the URL is printed just before uvicorn listens

            nobody = poll(anonymous, bool, "the server to listen")
            assert nobody.status_code == 401
            assert nobody.headers["www-authenticate"] == 'Bearer realm="taskstatus"'
            wrong = client.get(f"{base}/tasks/", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            good = client.get(f"{base}/tasks/", headers={"Authorization": "Bearer s3cret"})
            assert good.status_code == 200
            assert [s["uuid"] for s in good.json()["results"]] == [str(status.uuid)]
            # A browser signs in to the dashboard with the token, and has a cookie.
            home = f"http://127.0.0.1:{port}/"
            assert client.get(home).status_code == 401
            signed = client.post(f"{home}sign-in", data={"token": "s3cret", "next": "/"})
            assert signed.status_code == 303
            assert client.get(home).status_code == 200
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, out.decode()
        assert out.decode().endswith("Stopped.\n")
        assert "Traceback" not in out.decode()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])
def test_serve_refuses_to_listen_beyond_loopback_without_a_token(host):
    result = CliRunner(env={"TASKSTATUS_TOKEN": None}).invoke(cli, ["serve", "--host", host])
    assert result.exit_code == 1
    assert f"refusing to serve on {host} without a token" in result.output


def test_demo_then_serves_the_dashboard_of_its_tasks(tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    port = free_port()
    demo = ("--url", url, "demo", "--speed", "0.2", "--serve", "--port", str(port))
    with taskstatus_process(*demo) as proc:
        lines = iter(proc.stdout.readline, b"")
        dashboard = f"Dashboard: http://127.0.0.1:{port}/\n"
        assert dashboard in (line.decode() for line in lines), proc.poll()
        with httpx.Client(timeout=TIMEOUT) as client:

            def page() -> httpx.Response | None:
                assert proc.poll() is None
                try:
                    return client.get(f"http://127.0.0.1:{port}/")
                except httpx.ConnectError:
                    return None  # the URL is printed just before uvicorn listens

            answer = poll(page, bool, "the dashboard to answer")
            assert answer.status_code == 200
            assert "Export course math-101" in answer.text
            assert "Rebuild search index" in answer.text
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0
