"""A real three-node Redis Cluster on 127.0.0.1 (valkey from the stack's wheel), for the tests
that check the cache layout and the read path under cluster routing."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from nova_assets.core.process import free_port
from nova_assets.stack.services import HOST, RedisService

SLOTS = 16_384


class RedisClusterNode(RedisService):
    """One cluster-enabled node; its files live in `<home>/redis-<port>/`."""

    def __init__(self, home: Path, port: int) -> None:
        self.name = f"redis-{port}"
        self.bus_port = free_port()  # the default (port + 10000) may not exist for a high free port
        super().__init__(home, port)

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-port", str(self.bus_port),
            "--cluster-node-timeout", "5000",
        ]  # fmt: skip


def start_cluster(home: Path, size: int = 3, timeout_s: float = 30.0) -> list[RedisClusterNode]:
    """Start `size` masters, split the slots between them, introduce them, wait for state ok.

    On any failure every node started so far is stopped again.
    """
    nodes = [RedisClusterNode(home, free_port()) for _ in range(size)]
    try:
        _form(nodes, timeout_s)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


def _form(nodes: list[RedisClusterNode], timeout_s: float) -> None:
    for node in nodes:
        node.start_and_wait()
    clients = [redis.Redis(host=HOST, port=n.port) for n in nodes]
    step = SLOTS // len(nodes)
    for i, client in enumerate(clients):
        last = SLOTS - 1 if i == len(nodes) - 1 else (i + 1) * step - 1
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
    for node in nodes[1:]:
        clients[0].execute_command("CLUSTER", "MEET", HOST, node.port, node.bus_port)
    deadline = time.monotonic() + timeout_s
    text: list[str] = []
    while time.monotonic() < deadline:
        infos = [c.execute_command("CLUSTER", "INFO") for c in clients]
        text = [i.decode() if isinstance(i, bytes) else str(i) for i in infos]
        if all("cluster_state:ok" in t and f"cluster_known_nodes:{len(nodes)}" in t for t in text):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the local Redis Cluster did not reach cluster_state:ok in {timeout_s} s: {text}")
