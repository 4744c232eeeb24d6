from __future__ import annotations

import ipaddress

import psutil


def test_local_ray_listens_on_loopback_only(ray_local):
    ray_processes = [
        p for p in psutil.process_iter(["name"]) if p.info["name"] in ("gcs_server", "raylet")
    ]
    assert ray_processes
    addresses = set()
    for process in ray_processes:
        for connection in process.net_connections(kind="inet"):
            if connection.status == psutil.CONN_LISTEN:
                addresses.add(connection.laddr.ip.removeprefix("::ffff:"))
    assert addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses), addresses
