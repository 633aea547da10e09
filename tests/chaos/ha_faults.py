"""The faults of the HA soak (`python -m tests.chaos --ha`), on the private three-node RabbitMQ cluster and the
PostgreSQL primary/standby pair of tests.chaos.ha_servers; each is written to the fault log with its start and end:

* `node_kill`: `kill -9` of one RabbitMQ node, started again 3-8 s later (it rejoins the cluster by itself);
* `leader_kill`: the same on the node leading most of the scope's delay queues (`list_queues name leader`);
* `node_stop_app`: `rabbitmqctl stop_app` on one node, 3-10 s down, `start_app`;
* `rolling_restart`: stop_app / start_app of every node in turn, each only once
  `rabbitmq-queues check_if_node_is_quorum_critical` says stopping it keeps every quorum queue available;
* `node_freeze`: one node's VM stopped with SIGSTOP for `freeze_sec` (20 s), then SIGCONT;
* `amqp_close`: `close_all_connections` on every node;
* `pg_switchover`: the PostgreSQL primary stopped, 3-8 s with no primary at all, the synchronous standby promoted,
  then the old primary rebuilt as the new standby (pg_basebackup).

The worker kills, database session kills and control storms of tests.chaos.faults run beside them.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from typing import Any

from tests.chaos import faults
from tests.chaos.faultlog import Event, utcnow
from tests.chaos.ha_servers import PgPair, RabbitCluster
from tests.chaos.servers import RABBIT_BIN, PrivateRabbit


def _cluster(rig: faults.Rig) -> RabbitCluster:
    assert rig.cluster is not None, "an HA fault needs the soak's cluster"
    return rig.cluster


def _pair(rig: faults.Rig) -> PgPair:
    assert rig.pair is not None, "an HA fault needs the soak's PostgreSQL pair"
    return rig.pair


async def _kill_and_restart(rig: faults.Rig, kind: str, index: int, detail: dict[str, Any]) -> Event:
    cluster = _cluster(rig)
    start = utcnow()
    pid = cluster.kill(index)
    down = rig.down(3, 8)
    await asyncio.sleep(down)
    await cluster.restart(index)
    detail = {**detail, "node": cluster.nodes[index].node, "pid": pid, "down_sec": round(down, 2)}
    return rig.log.write(Event(kind, start, utcnow(), detail=detail))


async def node_kill(rig: faults.Rig) -> Event:
    index = rig.rng.randrange(len(_cluster(rig).nodes))
    return await _kill_and_restart(rig, "node_kill", index, {})


async def leader_kill(rig: faults.Rig) -> Event:
    cluster = _cluster(rig)
    scope = rig.scope
    leaders = await cluster.leaders()
    led = Counter(n for q, n in leaders.items() if q.startswith(f"{scope}.") and q.endswith(".delay") and n)
    if led:
        leader, count = led.most_common(1)[0]
        index = cluster.index_of(leader)
    else:
        leader, count, index = "", 0, None
    if index is None:
        index = rig.rng.randrange(len(cluster.nodes))
    return await _kill_and_restart(rig, "leader_kill", index, {"delay_queues_led": count, "leader": leader})


async def node_stop_app(rig: faults.Rig) -> Event:
    cluster = _cluster(rig)
    index = rig.rng.randrange(len(cluster.nodes))
    node = cluster.nodes[index]
    start = utcnow()
    await node.actl("stop_app", timeout=120)
    down = rig.down(3, 10)
    await asyncio.sleep(down)
    await node.actl("start_app", timeout=180)
    await node.actl("await_startup", timeout=180)
    detail = {"node": node.node, "down_sec": round(down, 2)}
    return rig.log.write(Event("node_stop_app", start, utcnow(), detail=detail))


def _queues_cli(node: PrivateRabbit, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RABBIT_BIN / "rabbitmq-queues"), "-q", "-n", node.node, *args],
        env=node.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def _wait_not_quorum_critical(node: PrivateRabbit, timeout: float = 90) -> float:
    """Until stopping `node` would leave every quorum queue with a majority; returns the seconds waited."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    while loop.time() - began < timeout:
        result = await asyncio.to_thread(_queues_cli, node, "check_if_node_is_quorum_critical")
        if result.returncode == 0:
            break
        await asyncio.sleep(1)
    return round(loop.time() - began, 2)


async def rolling_restart(rig: faults.Rig) -> Event:
    cluster = _cluster(rig)
    start = utcnow()
    steps = []
    for node in cluster.nodes:
        waited = await _wait_not_quorum_critical(node)
        await node.actl("stop_app", timeout=120)
        await asyncio.sleep(rig.down(1, 4))
        await node.actl("start_app", timeout=180)
        await node.actl("await_startup", timeout=180)
        steps.append({"node": node.node, "waited_for_quorum_sec": waited})
    return rig.log.write(Event("rolling_restart", start, utcnow(), detail={"steps": steps}))


def node_freeze(freeze_sec: float = 20.0) -> faults.Injector:
    async def inject(rig: faults.Rig) -> Event:
        cluster = _cluster(rig)
        index = rig.rng.randrange(len(cluster.nodes))
        start = utcnow()
        cluster.freeze(index)
        await asyncio.sleep(freeze_sec)
        cluster.thaw(index)
        await cluster.nodes[index].actl("await_startup", check=False, timeout=180)
        detail = {"node": cluster.nodes[index].node, "frozen_sec": freeze_sec}
        return rig.log.write(Event("node_freeze", start, utcnow(), detail=detail))

    return inject


async def amqp_close(rig: faults.Rig) -> Event:
    start = utcnow()
    codes = []
    for node in _cluster(rig).up():
        result = await node.actl("close_all_connections", "fault injected by the soak", check=False)
        codes.append(result.returncode)
    return rig.log.write(Event("amqp_close", start, utcnow(), detail={"rc": codes}))


def pg_switchover(gap: tuple[float, float] = (3.0, 8.0)) -> faults.Injector:
    async def inject(rig: faults.Rig) -> Event:
        pair = _pair(rig)
        start = utcnow()
        detail = await pair.switchover(rig.down(*gap))
        rig.pg = pair.primary
        promoted = utcnow()
        await pair.rebuild_standby()
        detail = {**detail, "promoted_at_sec": round((promoted - start).total_seconds(), 2)}
        return rig.log.write(Event("pg_switchover", start, utcnow(), detail=detail))

    return inject


HA_FAULTS: dict[str, faults.Injector] = {
    "worker_kill": faults.worker_kill,
    "amqp_close": amqp_close,
    "node_kill": node_kill,
    "leader_kill": leader_kill,
    "node_stop_app": node_stop_app,
    "rolling_restart": rolling_restart,
    "node_freeze": node_freeze(),
    "pg_terminate": faults.pg_terminate,
    "pg_switchover": pg_switchover(),
}
