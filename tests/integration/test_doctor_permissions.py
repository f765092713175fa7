"""``ocrctl doctor``'s checks that ask ``os.access`` for a denied case: each runs in a subprocess
without privileges (root passes every permission check otherwise)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ocrd.ops.doctor import FAIL, OK, WARN
from ocrd.ops.doctor.engine_checks import check_docker_socket

pytestmark = pytest.mark.usefixtures("isolated_config")

REPO = Path(__file__).resolve().parents[2]


def unprivileged(function: str, *args: str) -> dict:
    """``ocrd.ops.doctor.<function>(*args)`` in a subprocess that cannot bypass permissions (root
    drops its capabilities with setpriv), as the Check's fields."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        prefix = ["setpriv", "--bounding-set", "-all", "--inh-caps", "-all", "--"]
    module, name = function.rsplit(".", 1)
    code = (f"import json, sys, dataclasses; from pathlib import Path; from ocrd.ops.doctor.{module} "
            f"import {name}; print(json.dumps(dataclasses.asdict({name}(*map(Path, sys.argv[1:])))))")
    done = subprocess.run([*prefix, sys.executable, "-c", code, *args], cwd=REPO, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout)


def test_gpu_device_nodes_the_user_cannot_open_say_which_group_to_join(tmp_path):
    (tmp_path / "nvidiactl").touch(mode=0o666)
    (tmp_path / "nvidia0").touch(mode=0o600)
    os.chmod(tmp_path / "nvidia0", 0)  # nobody but a privileged process may open it
    check = unprivileged("gpu_checks.check_gpu_devices", str(tmp_path))
    assert check["status"] == WARN
    assert f"cannot open {tmp_path / 'nvidia0'} (group" in check["message"]
    assert "usermod -aG" in check["fix"] and "SupplementaryGroups=" in check["fix"]


def test_a_docker_socket_the_user_can_open_is_ok_and_a_closed_one_names_the_group(tmp_path):
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        environ = {"DOCKER_HOST": f"unix://{path}"}
        assert check_docker_socket(environ, "docker", WARN).status == OK
        os.chmod(path, 0)
        code = ("import dataclasses, json, sys; from ocrd.ops.doctor.engine_checks import check_docker_socket; "
                "print(json.dumps(dataclasses.asdict(check_docker_socket("
                "{'DOCKER_HOST': sys.argv[1]}, 'docker', 'warn'))))")
        prefix = ["setpriv", "--bounding-set", "-all", "--inh-caps", "-all", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, sys.executable, "-c", code, f"unix://{path}"], cwd=REPO,
                              check=True, capture_output=True, text=True)
    check = json.loads(done.stdout)
    assert check["status"] == WARN and f"cannot open {path} (group" in check["message"]
    assert "usermod -aG" in check["fix"] and "as powerful as root" in check["fix"]


def test_a_read_only_cache_warns_that_downloads_fail(tmp_path):
    hub = tmp_path / "hub"
    hub.mkdir(mode=0o555)
    check = unprivileged("cache_checks.check_hf_cache_access", str(hub))
    assert check["status"] == WARN and "downloads (ocrctl pull) fail" in check["message"]
    assert "chown" in check["fix"]


def test_an_unreadable_cache_fails_because_nothing_can_load(tmp_path):
    hub = tmp_path / "hub"
    hub.mkdir(mode=0o700)
    os.chmod(hub, 0o300)  # write and search, no read
    check = unprivileged("cache_checks.check_hf_cache_access", str(hub))
    assert check["status"] == FAIL and "cannot read" in check["message"]

