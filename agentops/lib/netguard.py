"""Outbound requests to addresses an admin typed (webhooks, provider base URLs) never reach the inside.

A budget admin can type any URL; the worker would POST there. Without this guard a URL could name Redis or
PostgreSQL on loopback, the cloud metadata address (169.254.169.254) or a private service. The rule, applied
twice — when the URL is saved (a form error) and again for every request after DNS resolution (a name can
change its answer after it was saved) — is: every address the host resolves to must be a public unicast
address, unless the operator allow-listed the host name or its network in AGENTOPS_ALLOW_PRIVATE_URLS.

At request time `guarded_transport` connects to the very address it checked (the URL is rewritten to the IP,
with the original Host header and TLS server name), so a DNS answer that changes between the check and the
connection (DNS rebinding) cannot slip through; every redirect hop is a new request and is checked too.

Domain-free: it reads one setting and imports no app.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from agentops.runtime.errors import RefusedDestination

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class RefusedURL(RefusedDestination):
    """The URL names (or resolves to) an address outbound requests may not reach; str() says why."""


@dataclass(frozen=True)
class AllowList:
    """Host names and networks the operator lets outbound requests reach although they are not public."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        """From `host`, `1.2.3.4`, `10.0.0.0/8` or `::1` entries; ValueError names a malformed one."""
        hosts, networks = set(), []
        for raw in entries:
            entry = raw.strip().lower().strip("[]")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if "/" in entry or not all(part and len(part) < 64 for part in entry.rstrip(".").split(".")):
                raise ValueError(f"{raw!r} is neither a host name nor an IP address or network")
            hosts.add(entry.rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def permits_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def permits_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks if network.version == address.version)


def why_refused(address: IPAddress) -> str | None:
    """None for a public unicast address, else a short reason (loopback, link-local, private, ...)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if not address.is_global:  # shared (100.64/10, used for cloud metadata too), reserved, documentation
        return "not public"
    return None


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


# Resolved addresses are kept a short while: a provider's host is otherwise looked up on every call (the
# request connects to the address that was checked, so a cached answer is as safe as a fresh one).
RESOLVE_TTL_SECONDS = 30.0
_resolved: dict[tuple[str, int], tuple[float, list[IPAddress]]] = {}


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the host resolves to (an empty list never: socket.gaierror when it does not resolve)."""
    now = time.monotonic()
    hit = _resolved.get((host, port))
    if hit is not None and hit[0] > now:
        return hit[1]
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos))
    if len(_resolved) > 1000:  # many distinct hosts (webhooks): start over rather than grow
        _resolved.clear()
    _resolved[(host, port)] = (now + RESOLVE_TTL_SECONDS, addresses)
    return addresses


def check_url(url: str, allow: AllowList | None = None, *, resolve_names: bool = True, must_resolve: bool = True):
    """The addresses requests to `url` may connect to (in resolver order); RefusedURL when the URL is not
    http(s), has no host, or any address it names or resolves to is refused. Returns [] when the host is
    allow-listed by name (its addresses are the operator's business) or when a name is not resolved
    (`resolve_names=False`, or it did not resolve and `must_resolve` is False: a form may save a name that
    only resolves where the worker runs; the request checks it again)."""
    allow = allow if allow is not None else configured_allow_list()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise RefusedURL("only http:// and https:// URLs are allowed")
    host = parts.hostname or ""
    if not host:
        raise RefusedURL("the URL has no host")
    if allow.permits_host(host):
        return []
    literal = literal_address(host)
    if literal is not None:
        addresses = [literal]
    elif not resolve_names:
        return []
    else:
        try:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError as exc:
            raise RefusedURL("the URL's port is not a number between 0 and 65535") from exc
        try:
            addresses = resolve(host, port)
        except (OSError, UnicodeError) as exc:
            if must_resolve:
                raise RefusedURL(f"{host} does not resolve") from exc
            return []
    for address in addresses:
        reason = why_refused(address)
        if reason and not allow.permits_address(address):
            named = f"{host} resolves to {address}" if literal is None else str(address)
            raise RefusedURL(f"{named}, which is not public ({reason})")
    return addresses


def refusal_at_save(url: str) -> str | None:
    """Why a URL may not be saved (None when it may): the save-time half of the rule. A name that does not
    resolve here is accepted (it may resolve only where the worker runs); every request checks it again."""
    try:
        check_url(url, must_resolve=False)
    except RefusedURL as exc:
        return str(exc)
    return None


@functools.lru_cache(maxsize=8)
def _parsed(entries: tuple[str, ...]) -> AllowList:
    return AllowList.parse(entries)


def configured_allow_list() -> AllowList:
    """settings.AGENTOPS_ALLOW_PRIVATE_URLS, parsed (cached per value, so a test's override applies)."""
    return _parsed(tuple(getattr(settings, "AGENTOPS_ALLOW_PRIVATE_URLS", ())))


def guarded_transport(base: type) -> type:
    """A subclass of an httpx-style HTTPTransport (`httpx.HTTPTransport`, or `httpx2.HTTPTransport` under the
    openai SDK) that checks each request's URL after DNS resolution and connects to the address it
    checked: RefusedURL is raised before any byte leaves for a refused address."""

    class GuardedTransport(base):
        def handle_request(self, request):
            pin(request)
            return super().handle_request(request)

    GuardedTransport.__name__ = GuardedTransport.__qualname__ = f"Guarded{base.__name__}"
    return GuardedTransport


def pin(request) -> None:
    """Check an httpx-style request's URL and point it at the checked address (Host header and TLS
    server name keep the name, so virtual hosts and certificate checks work as before)."""
    url = request.url
    addresses = check_url(str(url))
    host = url.host
    if not addresses or literal_address(host) is not None:
        return  # allow-listed by name, or an IP literal: nothing to pin
    request.url = url.copy_with(host=str(addresses[0]))
    request.extensions = {**request.extensions, "sni_hostname": host}


def guarded_client(*, timeout: float) -> httpx.Client:
    """An httpx client for requests to addresses someone typed or sent us (webhooks, chat response URLs): its
    transport checks every request after DNS resolution and connects to the address it checked; redirects are
    not followed, so a far end cannot bounce the request to an address it could not name itself."""
    return httpx.Client(transport=guarded_transport(httpx.HTTPTransport)(), timeout=timeout, follow_redirects=False)
