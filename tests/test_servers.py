"""The test servers' own helpers (tests/servers.py): a server counts as up only when it is ours."""

import re
import subprocess
import sys

from tests.servers import _answers, launch_until_up, listens, ours_answering, stop


def http_server(port: int = 0) -> tuple[subprocess.Popen, str]:
    """Python's http.server on 127.0.0.1 (`port`, or one it picks); the process and its URL."""
    process = subprocess.Popen([sys.executable, "-u", "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    port = re.search(r"port (\d+)", process.stdout.readline()).group(1)  # "Serving HTTP on ... port N"
    return process, f"http://127.0.0.1:{port}"


def test_a_server_is_taken_for_ours_only_when_our_process_listens_on_its_port():
    foreign, taken = http_server()
    ours, own = http_server()
    try:
        assert listens(ours, own) and not listens(ours, taken)
    finally:
        stop(ours)
        stop(foreign)
    assert not listens(ours, own)  # ended: nothing of it listens


def test_a_port_that_another_program_answers_on_makes_the_launch_try_other_ports():
    foreign, taken = http_server()
    launched = []

    def launch():
        if not launched:  # the first pick is the taken port; our server there could not bind
            process, url = subprocess.Popen(["sleep", "60"], start_new_session=True), taken
        else:
            process, url = http_server()
        launched.append(url)
        return process, lambda: ours_answering(process, url, lambda: _answers(url))

    try:
        process = launch_until_up(launch, what="http.server", seconds=30)
        assert launched[0] == taken and len(launched) == 2 and listens(process, launched[1])
        stop(process)
    finally:
        stop(foreign)
