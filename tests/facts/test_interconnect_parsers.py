"""Parsers of the multi-node facts on recorded outputs (`<fact>.out` beside the `.txt` ones) and odd input."""

from __future__ import annotations

from pathlib import Path

from facts import commands
from facts import parsers as p
from tests.fakehosts import PROFILES_DIR

A100 = PROFILES_DIR / "a100sxm-x8-ubuntu2204" / "converged"
RTX4090 = PROFILES_DIR / "4090-x2-ubuntu2204" / "converged"
RTX2080 = PROFILES_DIR / "2080ti-x4-ubuntu2404" / "converged"


def read(base: Path, fact: str) -> str:
    return (base / f"{fact}.out").read_text()


def test_ibstat_infiniband_box_lists_its_active_hdr_ports_and_skips_the_down_ethernet_one() -> None:
    ib = p.parse_ibstat(read(A100, "ibstat"))
    assert ib.status == "ok" and len(ib.ports) == 5
    assert [port.name for port in ib.active_infiniband] == ["mlx5_0:1", "mlx5_1:1", "mlx5_2:1", "mlx5_3:1"]
    assert {port.rate for port in ib.active_infiniband} == {200}
    assert ib.active_roce == ()  # mlx5_4 is Ethernet but Down/Disabled


def test_ibstat_roce_box_has_one_active_ethernet_port() -> None:
    ib = p.parse_ibstat(read(RTX4090, "ibstat"))
    assert ib.active_infiniband == ()
    assert [(port.name, port.link_layer, port.rate) for port in ib.active_roce] == [("mlx5_0:1", "Ethernet", 100)]


def test_ibstat_absent_is_missing_not_an_error() -> None:
    assert p.parse_ibstat(read(RTX2080, "ibstat")).status == "missing"
    assert p.parse_ibstat("").status == "empty"
    assert p.parse_ibstat("ibpanic: [12] main: stat of IB device 'mlx5_0' failed: No IB devices found").status \
        == "no_devices"


def test_route_get_names_the_interface_and_source_towards_the_head() -> None:
    route = p.parse_ip_route_get(read(A100, "ip_route"))
    assert (route.status, route.dev, route.src, route.via) == ("ok", "ib0", "10.10.0.11", None)
    routed = p.parse_ip_route_get("10.1.2.3 via 192.168.1.1 dev enp5s0 src 192.168.1.21 uid 1000 \\    cache ")
    assert (routed.dev, routed.src, routed.via, routed.local) == ("enp5s0", "192.168.1.21", "192.168.1.1", False)
    own = p.parse_ip_route_get("local 10.0.0.5 dev lo table local src 10.0.0.5 uid 0 \\    cache <local> ")
    assert own.local and own.dev == "lo"
    assert p.parse_ip_route_get("RTNETLINK answers: Network is unreachable").status == "unreachable"
    assert p.parse_ip_route_get("sh: 1: ip: not found").status == "missing"


def test_ip_addr_reads_each_ipv4_address_with_its_interface_and_scope() -> None:
    addrs = p.parse_ip_addr(read(RTX4090, "ip_addr"))
    assert [(a.ifname, a.address, a.prefixlen) for a in addrs] == [
        ("lo", "127.0.0.1", 8), ("enp5s0", "192.168.1.21", 24), ("enp65s0f0np0", "10.30.0.21", 24)]
    assert addrs[0].scope == "host"
    veth = p.parse_ip_addr("5: eth0@if6    inet 10.88.0.2/16 brd 10.88.255.255 scope global eth0\\  valid_lft forever")
    assert veth[0].ifname == "eth0"


def test_acs_enabled_on_the_4090_root_ports_and_absent_on_the_bridge_without_acs() -> None:
    acs = p.parse_lspci_acs(read(RTX4090, "pci_acs"))
    assert acs.status == "ok"
    assert [b.slot for b in acs.redirecting] == ["00:01.1", "00:03.1"]  # 00:08.1 has no ACS capability
    assert {"ReqRedir", "CmpltRedir", "SrcValid"} <= acs.redirecting[0].enabled
    assert "TransBlk" not in acs.redirecting[0].enabled  # ACSCap's '+' bits are not ACSCtl's


def test_acs_off_needs_no_redirect_and_unprivileged_lspci_is_denied() -> None:
    off = p.parse_lspci_acs("00:01.0 PCI bridge: X\n\t\tACSCtl:\tSrcValid- TransBlk- ReqRedir- CmpltRedir- "
                            "UpstreamFwd- EgressCtrl- DirectTrans-\n")
    assert off.bridges and not off.redirecting
    assert p.parse_lspci_acs("00:01.0 PCI bridge: X\n\tCapabilities: <access denied>\n").status == "denied"


def test_commands_quote_the_head_address() -> None:
    assert commands.ip_route_get("10.0.0.1") == "ip -o route get 10.0.0.1 2>&1 || true"
    assert commands.ip_route_get("a b;c").startswith("ip -o route get 'a b;c'")
