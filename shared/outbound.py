"""Where the service may connect on a tenant's behalf: public unicast addresses only.

A tenant names a URL (a webhook today, message media later) and our workers
connect to it from inside the cluster, next to Redis, Flower, the metrics
exporters and the cloud's metadata service. So every such connection goes
through an :class:`OutboundPolicy`:

- the host is resolved, every address it resolves to is checked, and the
  socket is opened to one of those checked addresses (never resolved again,
  so DNS rebinding between the check and the connect cannot slip past it);
- allowed are global unicast addresses: no loopback, private, shared
  (100.64/10), link-local (169.254/16, fe80::/10), unique-local (fc00::/7),
  unspecified, multicast, reserved or documentation ranges, no IPv4-mapped,
  6to4, Teredo or NAT64 spellings of them;
- a numeric host in any spelling but the canonical one (``2130706433``,
  ``0177.0.0.1``, ``0x7f.1``) is refused outright;
- redirects are not followed and proxies from the environment are not used.

``WEBHOOK_ALLOW_PRIVATE`` (off by default) lifts the address check for local
development and tests, whose receivers listen on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from shared.errors import DestinationRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: (host, port) -> the addresses it resolves to; socket.getaddrinfo by default.
Resolver = Callable[[str, int], list[str]]

_NUMERIC_LABEL = re.compile(r"0[xX][0-9a-fA-F]*|[0-9]+")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def system_resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (raises socket.gaierror when it does not)."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells, if it is an IP literal; DestinationRefused for a
    numeric host in a non-canonical spelling (decimal, octal, hex, short forms)."""
    bare = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    labels = bare.split(".")
    if labels and all(_NUMERIC_LABEL.fullmatch(label) for label in labels):
        # inet_aton (and so getaddrinfo) reads these as addresses: 2130706433 is 127.0.0.1.
        raise DestinationRefused("spell an IP address host in dotted decimal (such as "
                                 "203.0.113.7) or use a host name", field="url")
    return None


def is_public(address: IPAddress) -> bool:
    """True for a global unicast address, the only kind a tenant's URL may reach."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None or address.teredo is not None:
            return False
        if address.sixtofour is not None:
            return is_public(address.sixtofour)
        if address in _NAT64:
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address in _NAT64_LOCAL:
            return False
    return bool(address.is_global and not address.is_multicast and not address.is_reserved
                and not address.is_loopback and not address.is_link_local
                and not address.is_unspecified)


@dataclass(frozen=True)
class OutboundPolicy:
    """The address check for URLs fetched for a tenant, and HTTP sessions that apply it."""

    allow_private: bool = False
    resolve: Resolver = field(default=system_resolve)

    def allowed(self, address: IPAddress) -> bool:
        """True if a connection to ``address`` is allowed under this policy."""
        if self.allow_private:
            return not (address.is_unspecified or address.is_multicast)
        return is_public(address)

    def check_url(self, url: str) -> None:
        """Refuse (DestinationRefused) a URL whose host is, or now resolves to, an address
        the policy forbids. A host that does not resolve now passes: the connection is
        checked again at delivery, on the addresses it resolves to then. With
        ``allow_private`` a name is not looked up at all."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        literal = literal_address(host)
        if literal is not None:
            found = [literal]
        elif self.allow_private:
            return  # nothing a name resolves to is refused then but 0.0.0.0: leave it to delivery
        else:
            try:
                found = [ipaddress.ip_address(a.split("%")[0])
                         for a in self.resolve(host, parts.port or 443)]
            except (OSError, UnicodeError, ValueError):
                return
        if not all(self.allowed(a) for a in found):
            raise DestinationRefused(_refusal(), field="url")

    def addresses(self, host: str, port: int) -> list[str]:
        """The checked addresses to connect to for ``host``; DestinationRefused when any
        address it resolves to is forbidden (a mixed answer is refused as a whole)."""
        literal = literal_address(host)
        if literal is not None:
            found = [str(literal)]
        else:
            found = self.resolve(host, port)  # OSError (gaierror) when it does not resolve
        checked = [ipaddress.ip_address(a.split("%")[0]) for a in found]
        if not checked or not all(self.allowed(a) for a in checked):
            raise DestinationRefused(_refusal())
        return [str(a) for a in checked]

    def session(self) -> requests.Session:
        """A requests session whose connections go only to checked addresses."""
        session = _NoRedirectSession()
        session.trust_env = False  # no HTTP(S)_PROXY: the proxy would connect, unchecked
        adapter = _CheckedAdapter(self)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session


def _refusal() -> str:
    return ("the URL's host is or resolves to an address that is not public (loopback, "
            "private, link-local or reserved); wapair only connects to public addresses")


def _connect(conn: HTTPConnection, policy: OutboundPolicy) -> socket.socket:
    """Open the socket of ``conn`` to one of its host's checked addresses."""
    last: OSError | None = None
    try:
        addresses = policy.addresses(conn.host, conn.port)
    except socket.gaierror as e:
        raise NameResolutionError(conn.host, conn, e) from e
    except (OSError, UnicodeError) as e:  # an injected resolver's way to say "unknown"
        raise NameResolutionError(conn.host, conn, socket.gaierror(str(e))) from e
    for address in addresses:
        try:
            sock = socket.create_connection((address, conn.port), conn.timeout,
                                            source_address=conn.source_address)
        except TimeoutError as e:
            raise ConnectTimeoutError(conn, f"connection to {conn.host} timed out") from e
        except OSError as e:
            last = e
            continue
        for option in conn.socket_options or []:
            sock.setsockopt(*option)
        return sock
    raise NewConnectionError(conn, f"failed to establish a new connection: {last}")


def _pools(policy: OutboundPolicy) -> dict[str, type[HTTPConnectionPool]]:
    class CheckedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return _connect(self, policy)

    class CheckedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return _connect(self, policy)  # TLS is then set up for the host name (SNI)

    class CheckedHTTPPool(HTTPConnectionPool):
        ConnectionCls = CheckedHTTPConnection

    class CheckedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = CheckedHTTPSConnection

    return {"http": CheckedHTTPPool, "https": CheckedHTTPSPool}


class _NoRedirectSession(requests.Session):
    """A session that never follows a redirect, whatever a caller asks (the Location
    could name any host; a 3xx is the receiver's answer, recorded as such)."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        kwargs["allow_redirects"] = False
        return super().send(request, **kwargs)


class _CheckedAdapter(HTTPAdapter):
    """requests' adapter with connection pools whose sockets go to checked addresses."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self._policy = policy
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pools(self._policy)
