"""The API run as a service of its own (uvicorn's app factory with HUB_SETTINGS, beside `hub worker`) logs
as `hub run` does (issue 9, hole 4): paths without query strings, libraries held back, no secret.

uvicorn configures logging before it loads the app, and the factory is the hub's first code to run: it
must set the hub's logging up itself, or the access log keeps the webhook's query string (the gateway's
secret, the sender's number, the PIN typed) and tracebacks show local variables. Any process that imports
the hub and never configures logging prints plain tracebacks too.
"""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import urlencode

import httpx

from tests.conftest import free_port
from tests.deployed.conftest import Deployment

PHONE, MO_SECRET = "+6281277775555", "mo-secret-api-4d2c"
SMS = {
    "enabled": True,
    "sender": "DUKCAPIL",
    "mo_secret": MO_SECRET,
    "dlr_secret": "dlr-secret-api-5e1f",
    "gateways": [{"driver": "kannel", "name": "kannel", "username": "hub", "password": "kannel-pass-api-77",
                  "url": f"http://127.0.0.1:{free_port()}/cgi-bin/sendsms"}],
}  # fmt: skip


def test_the_api_as_its_own_service_logs_paths_without_query_strings(deployment: Deployment) -> None:
    deployment.configure(channels={"sms": SMS})
    proc, url = deployment.start_api()
    mo = {"kind": "mo", "k": MO_SECRET, "from": PHONE, "text": "LACAK KTP-2031-0042 482913"}
    answered = httpx.get(f"{url}/v1/channels/sms/webhook?{urlencode(mo)}", timeout=30)
    wrong = httpx.get(f"{url}/v1/channels/sms/webhook?{urlencode({**mo, 'k': 'not-it'})}", timeout=30)
    assert (answered.status_code, wrong.status_code) == (200, 403)
    deployment.stop(proc)

    written = deployment.log(proc)
    access = [line.split(" - ", 1)[1] for line in written.splitlines() if "/v1/channels/sms/webhook" in line]
    assert access == [
        '"GET /v1/channels/sms/webhook HTTP/1.1" 200 OK',
        '"GET /v1/channels/sms/webhook HTTP/1.1" 403 Forbidden',
    ], written
    for value in (MO_SECRET, PHONE, PHONE[1:], "482913", "kannel-pass-api-77", "dlr-secret-api-5e1f"):
        assert value not in written, written


def test_a_process_that_never_configures_logging_prints_no_local_variables() -> None:
    """Before ``configure`` (or without it), structlog's default would print rich tracebacks with locals."""
    code = (
        "from hub.logs import log\n"
        "def send(password):\n"
        "    raise ConnectionError('cannot reach smtp.example')\n"
        "try:\n"
        "    send('smtp-pass-7f3e-local')\n"
        "except ConnectionError:\n"
        "    log.exception('send_failed')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    printed = result.stdout + result.stderr
    assert "ConnectionError: cannot reach smtp.example" in printed and "Traceback" in printed, printed
    assert "smtp-pass-7f3e-local" not in printed, printed
