"""Cluster descriptions for MultiWorkerMirroredStrategy: TF_CONFIG parsing and validation, cluster files,
and a one-machine cluster on 127.0.0.1. No TensorFlow import: errors are reported before any work starts."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ClusterConfigError(ValueError):
    """A TF_CONFIG or cluster file is malformed; the message names the source, the field and the problem."""


@dataclass(frozen=True)
class ClusterSpec:
    """The workers' host:port addresses and this process's index among them."""

    workers: tuple[str, ...]
    index: int

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    def tf_config(self) -> str:
        """The TF_CONFIG environment value for this process."""
        return json.dumps({"cluster": {"worker": list(self.workers)}, "task": {"type": "worker", "index": self.index}})


def parse_tf_config(text: str, source: str = "TF_CONFIG") -> ClusterSpec:
    """Validate a TF_CONFIG JSON value: {"cluster": {"worker": ["host:port", ...]}, "task": {"type", "index"}}."""
    try:
        value: Any = json.loads(text)
    except json.JSONDecodeError as error:
        raise ClusterConfigError(f"{source}: not valid JSON ({error.msg} at line {error.lineno}, "
                                 f"column {error.colno})") from error
    if not isinstance(value, dict):
        raise ClusterConfigError(f"{source}: expected a JSON object, found {type(value).__name__}")
    cluster, task = value.get("cluster"), value.get("task")
    if not isinstance(cluster, dict) or not isinstance(cluster.get("worker"), list) or not cluster["worker"]:
        raise ClusterConfigError(f"{source}: cluster.worker: expected a non-empty list of 'host:port' strings")
    unknown_roles = sorted(set(cluster) - {"worker", "chief"})
    if unknown_roles:
        raise ClusterConfigError(f"{source}: cluster: unsupported roles {unknown_roles} (expected 'worker'; "
                                 "parameter servers are not used: gradients are all-reduced)")
    chief = cluster.get("chief", [])
    if not isinstance(chief, list):  # a string would be split into characters
        raise ClusterConfigError(f"{source}: cluster.chief: expected a list of 'host:port' strings (e.g. "
                                 f"[\"host:2222\"]), found a {type(chief).__name__}")
    workers = [*chief, *cluster["worker"]]
    for i, address in enumerate(workers):
        _check_address(address, f"{source}: cluster.worker[{i}]")
    if len(set(workers)) != len(workers):
        raise ClusterConfigError(f"{source}: cluster.worker: duplicate addresses in {workers}")
    _check_distinct_endpoints(workers, source)
    if not isinstance(task, dict):
        raise ClusterConfigError(f"{source}: task: expected an object with 'type' and 'index'")
    role, index = task.get("type"), task.get("index")
    if role not in ("worker", "chief"):
        raise ClusterConfigError(f"{source}: task.type: expected 'worker' or 'chief', found {role!r}")
    if not isinstance(index, int) or isinstance(index, bool):
        raise ClusterConfigError(f"{source}: task.index: expected an integer, found {index!r}")
    offset = len(chief) if role == "worker" else 0
    count = len(cluster["worker"]) if role == "worker" else len(chief)
    if not 0 <= index < count:
        raise ClusterConfigError(f"{source}: task.index: {index} is out of range for {count} {role}(s)")
    return ClusterSpec(tuple(workers), index + offset)


def cluster_from_environment() -> ClusterSpec | None:
    """The validated TF_CONFIG of this process, or None when it is not set."""
    text = os.environ.get("TF_CONFIG")
    return parse_tf_config(text) if text else None


def load_cluster_file(path: Path, index: int) -> ClusterSpec:
    """A cluster file is JSON {"workers": ["host:port", ...]}; `index` says which of them this process is."""
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as error:
        raise ClusterConfigError(f"{path}: cannot read cluster file ({error.strerror})") from error
    except UnicodeDecodeError as error:
        raise ClusterConfigError(f"{path}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset "
                                 f"{error.start}): a cluster file is JSON") from error
    except json.JSONDecodeError as error:
        raise ClusterConfigError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from error
    workers = value.get("workers") if isinstance(value, dict) else None
    if not isinstance(workers, list) or not workers:
        raise ClusterConfigError(f"{path}: workers: expected a non-empty list of 'host:port' strings")
    config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
    return parse_tf_config(json.dumps(config), str(path))


def local_cluster(count: int) -> list[ClusterSpec]:
    """`count` workers on 127.0.0.1, each on a currently free port."""
    if count < 1:
        raise ClusterConfigError(f"--workers: expected an integer >= 1, found {count}")
    ports = []
    sockets = []
    for _ in range(count):  # keep them bound until all are chosen, so that no port is handed out twice
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    workers = tuple(f"127.0.0.1:{port}" for port in ports)
    return [ClusterSpec(workers, i) for i in range(count)]


def _check_address(address: object, where: str) -> None:
    if not isinstance(address, str) or address.count(":") < 1:
        raise ClusterConfigError(f"{where}: expected 'host:port', found {address!r}")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterConfigError(f"{where}: expected 'host:port' with a port in 1..65535, found {address!r}")


def _check_distinct_endpoints(workers: list[str], source: str) -> None:
    """ClusterConfigError when two addresses with the same port name the same host two ways (127.0.0.1:N and
    localhost:N): the second worker could never start its server, and the first would wait for it forever. Only
    addresses that share a port are resolved; a name that does not resolve is compared as written."""
    by_port: dict[str, list[int]] = {}
    for index, address in enumerate(workers):
        by_port.setdefault(address.rpartition(":")[2], []).append(index)
    for indices in by_port.values():
        seen: dict[str, int] = {}
        for index in indices:
            for ip in _addresses(workers[index].rpartition(":")[0]):
                if ip in seen:
                    first = seen[ip]
                    raise ClusterConfigError(
                        f"{source}: cluster.worker[{first}] {workers[first]!r} and cluster.worker[{index}] "
                        f"{workers[index]!r} are the same endpoint ({ip}): give each worker its own host:port")
            seen.update((ip, index) for ip in _addresses(workers[index].rpartition(":")[0]))


def _addresses(host: str) -> set[str]:
    """The IP addresses `host` resolves to ({host} when it does not resolve); loopback addresses count as one."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return {host}
    found = {str(info[4][0]) for info in infos}
    return {"loopback" if ip.startswith("127.") or ip == "::1" else ip for ip in found}
