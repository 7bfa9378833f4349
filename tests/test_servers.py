"""The test servers' own helpers (tests/servers.py): a server counts as up only when it is ours."""

import re
import socket
import subprocess
import sys

from tests.servers import listens, stop


def test_a_server_is_taken_for_ours_only_when_our_process_listens_on_its_port():
    with socket.socket() as foreign:  # another program that took the port first
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        taken = f"http://127.0.0.1:{foreign.getsockname()[1]}"
        ours = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        try:
            own_port = re.search(r"port (\d+)", ours.stdout.readline()).group(1)  # "Serving HTTP on ... port N"
            assert listens(ours, f"http://127.0.0.1:{own_port}")
            assert not listens(ours, taken)
        finally:
            stop(ours)
    assert not listens(ours, f"http://127.0.0.1:{own_port}")  # ended: nothing of it listens
