"""homeproxy as the LAN sees it (`self_identity`), the config's `mdns://` upstreams (`mdns_refs`), and
the upstreams that are homeproxy itself (`upstream_loops`)."""

from __future__ import annotations

from urllib.parse import urlsplit

from homeproxy.config.model import Config
from homeproxy.discovery.directory import ServiceDirectory
from homeproxy.discovery.interfaces import Interface, addresses_of
from homeproxy.discovery.service import MdnsRef, SelfIdentity, is_mdns_ref, parse_mdns_ref


def mdns_refs(config: Config) -> tuple[MdnsRef, ...]:
    """The `mdns://` upstreams of the enabled sites (and their routes)."""
    refs: dict[str, MdnsRef] = {}
    for site in config.sites:
        if not site.enabled:
            continue
        for upstream in site.all_upstreams:
            if is_mdns_ref(upstream):
                try:
                    ref = parse_mdns_ref(upstream)
                except ValueError:
                    continue
                refs.setdefault(ref.key, ref)
    return tuple(refs.values())


def self_identity(instance_id: str, config: Config, port: int, interfaces: tuple[Interface, ...]) -> SelfIdentity:
    """This homeproxy as the LAN sees it: the interfaces' and listen addresses, the plain-HTTP `port`
    (as bound) and the HTTPS port while a site has TLS."""
    ports = [port, config.server.https_port] if config.tls_sites else [port]
    return SelfIdentity.of(instance_id, [*addresses_of(interfaces), *config.server.listen], ports)


def upstream_loops(config: Config, identity: SelfIdentity, directory: ServiceDirectory) -> dict[tuple[str, str], str]:
    """(site, upstream) -> why, for each enabled site's upstream that is homeproxy itself: a URL with
    one of its addresses (or `localhost`) and ports, or the `mdns://` name of one of its adverts."""
    loops: dict[tuple[str, str], str] = {}
    for site in config.sites:
        if not site.enabled:
            continue
        for upstream in site.all_upstreams:
            if is_mdns_ref(upstream):
                try:
                    service = directory.get(parse_mdns_ref(upstream).name)
                except ValueError:
                    continue
                if service is not None and service.own:
                    loops[(site.name, upstream)] = (
                        f"The site {site.name} forwards to {upstream}, which is homeproxy's own advert: "
                        "homeproxy does not forward to it, since every request would loop back."
                    )
                continue
            try:
                url = urlsplit(upstream)
                host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
            except ValueError:
                continue
            if host and identity.is_us(host, port):
                loops[(site.name, upstream)] = (
                    f"The site {site.name} forwards to {upstream}, which is homeproxy itself: "
                    "every request would loop back. Point it at the service's own address."
                )
    return loops
