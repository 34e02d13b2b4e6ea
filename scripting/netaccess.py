"""Where OSC listeners bind and whom they hear: the network rules of `serve` and `osc monitor`.

A listener binds 127.0.0.1 (this machine only) unless the user names another address
(``--osc-host``): ``0.0.0.0`` is every IPv4 interface, ``::`` every IPv6 and IPv4 interface, or
one interface's own address. An allow-list (``--osc-allow``) of addresses, CIDR networks and host
names, IPv4 or IPv6, then decides which senders are heard; a datagram from anyone else is
dropped (and counted by the caller).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from tildekit.errors import TildekitError

# Room for bursts: a fader flood must not lose datagrams while the listener thread waits for the GIL.
RECEIVE_BUFFER_BYTES = 1 << 20

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _sender_address(sender: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The sender as an IP address; an IPv4 peer seen through an IPv6 socket as its IPv4 address."""
    try:
        address = ipaddress.ip_address(sender.split("%", 1)[0])  # drop an IPv6 scope id (fe80::1%eth0)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class AllowList:
    """The senders a listener hears: IPv4 and IPv6 networks (a single address is a /32 or /128)."""

    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, entries: Iterable[str] | None, option: str = "--osc-allow") -> AllowList | None:
        """None (everyone) for no entries; each entry an address, a CIDR network or a host name.

        An entry may hold several, separated by commas or spaces (``OSC_ALLOW="10.0.0.5 ::1"``).
        """
        if entries is None:
            return None
        words = [word for entry in entries for word in str(entry).replace(",", " ").split()]
        if not words:
            return None
        networks: list[IPNetwork] = []
        for word in words:
            try:
                network = ipaddress.ip_network(word.split("%", 1)[0], strict=False)
            except ValueError:
                networks.extend(_resolve(word, option))
                continue
            if isinstance(network, ipaddress.IPv6Network) and network.prefixlen == 128:
                mapped = network.network_address.ipv4_mapped
                if mapped is not None:  # ::ffff:10.0.0.5 names an IPv4 sender
                    network = ipaddress.ip_network(mapped)
            networks.append(network)
        return cls(tuple(networks))

    def allows(self, sender: str) -> bool:
        address = _sender_address(sender)
        return address is not None and any(address in network for network in self.networks)

    def __str__(self) -> str:
        return ", ".join(str(n) for n in self.networks)


def _resolve(name: str, option: str) -> list[IPNetwork]:
    # Something shaped like an address or a network is a mistyped one, not a host name to look up.
    if "/" in name or ":" in name or len(name) > 253 or not name.strip("0123456789."):
        raise TildekitError(f"{option} {name[:80]}: not an IP address, a network like 192.168.1.0/24 "
                            f"or fd00::/8, or a known host name")
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError):
        raise TildekitError(f"{option} {name}: not an IP address, a network like 192.168.1.0/24 "
                            f"or fd00::/8, or a known host name") from None
    return [ipaddress.ip_network(str(info[4][0]).split("%", 1)[0]) for info in infos]


def open_udp_socket(host: str, port: int, option: str = "--osc-host",
                    port_option: str = "--osc-port") -> socket.socket:
    """A UDP socket bound to ``host:port``: IPv6 when ``host`` is an IPv6 address or name.

    Bound to ``::``, the socket also hears IPv4 senders (as ``::ffff:a.b.c.d``).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError, OverflowError):
        raise TildekitError(f"{option} {host}: not an IP address or a known host name of this machine "
                            f"(127.0.0.1 for this machine only, 0.0.0.0 or :: for every interface)") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            except OSError:  # a system without dual-stack sockets: IPv6 senders only
                pass
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        except OSError:
            pass
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            hint = f"another program (a patch, another engine?) uses it: pick another {port_option}"
        elif exc.errno == errno.EADDRNOTAVAIL:
            hint = f"{host} is not an address of this machine: check {option}"
        else:
            hint = f"check {option} and {port_option}"
        raise TildekitError(f"cannot listen for OSC on {host}:{port}: {exc.strerror or exc} ({hint})") from None
    return sock


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return host == "localhost"


def exposure_warning(host: str, allow: AllowList | None) -> str | None:
    """A warning when a listener hears the network with no allow-list (anyone there can play it)."""
    if is_loopback(host) or allow is not None:
        return None
    return (f"OSC listens on {host} with no --osc-allow: any machine on that network can control "
            f"the sound; add --osc-allow ADDRESS_OR_NETWORK to accept only your controllers")
