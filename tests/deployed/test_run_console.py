"""`hub run` says where the console is, in one line an operator can open."""

from __future__ import annotations

from hub.cli.processes import console_address
from tests.deployed.conftest import Deployment


def test_hub_run_prints_the_console_address(deployment: Deployment) -> None:
    proc = deployment.start_run()
    wanted = f"console: http://127.0.0.1:{deployment.port}/console/"
    lines = deployment.wait_for(
        lambda: [line for line in deployment.log(proc).splitlines() if line.startswith("console: ")],
        what="the console line",
    )
    assert lines == [wanted]
    assert deployment.api.get("/console/masuk").status_code == 200  # and it is there


def test_the_console_address_of_every_interface_is_the_public_url() -> None:
    assert console_address("https://hub.disdukcapil.example.go.id/", "0.0.0.0", 8080) == (
        "https://hub.disdukcapil.example.go.id/console/"
    )
    assert console_address("http://x", "::1", 9000) == "http://[::1]:9000/console/"
