//! [`ClientIpKey`]: requests keyed by the client's IP address, directly or behind trusted
//! proxies; [`IpNet`], the networks those proxies are in.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use ::http::header::{FORWARDED, HeaderName, HeaderValue};
use ::http::{Extensions, Request};

use super::KeyExtractor;

/// The address of a request's connection peer, as a request extension: what
/// [`ClientIpKey`] reads by default.
///
/// A hyper server inserts it in its accept loop (the address `accept` returned), e.g. with
/// `service_fn(move |mut request| { request.extensions_mut().insert(ClientAddr(peer)); ... })`.
/// axum puts its own `ConnectInfo<SocketAddr>` there instead, which
/// [`ClientIpKey::peer_addr`] reads without this type (see the [module docs](super)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

/// An IP network in CIDR notation, e.g. the networks of trusted proxies:
/// `"10.0.0.0/8".parse::<IpNet>()`, `"2001:db8::/32".parse()`.
///
/// A bare address is a network of that address alone (`/32`, `/128`). An address with bits
/// set after the prefix (`10.1.2.3/8`) is refused ([`IpNetError::HostBitsSet`]) rather than
/// guessed at. IPv4-mapped IPv6 networks (`::ffff:10.0.0.0/104`) are the IPv4 networks they
/// map (`10.0.0.0/8`), as IPv4-mapped addresses are IPv4 addresses everywhere in this module.
///
/// ```
/// use ratewindow::tower::{IpNet, IpNetError};
///
/// let net: IpNet = "10.0.0.0/8".parse()?;
/// assert!(net.contains("10.20.30.40".parse()?));
/// assert!(net.contains("::ffff:10.1.1.1".parse()?));
/// assert!(!net.contains("11.0.0.1".parse()?));
/// assert_eq!("10.0.0.0/33".parse::<IpNet>(), Err(IpNetError::InvalidPrefix));
/// assert_eq!("10.1.2.3/8".parse::<IpNet>(), Err(IpNetError::HostBitsSet));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why a network did not parse ([`IpNet`]'s `FromStr`) or build ([`IpNet::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpNetError {
    /// The part before `/` is not an IPv4 or IPv6 address.
    InvalidAddress,
    /// The part after `/` is not a decimal prefix length of at most 32 (IPv4) or 128 (IPv6).
    InvalidPrefix,
    /// The address has bits set after the prefix, e.g. `10.1.2.3/8` for `10.0.0.0/8`.
    HostBitsSet,
}

impl fmt::Display for IpNetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpNetError::InvalidAddress => "invalid network: not an IP address",
            IpNetError::InvalidPrefix => "invalid network: prefix length out of range",
            IpNetError::HostBitsSet => "invalid network: address has bits set after the prefix",
        })
    }
}

impl std::error::Error for IpNetError {}

impl IpNet {
    /// The network of `addr` with a `prefix`-bit mask.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<IpNet, IpNetError> {
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 && v6.to_ipv4_mapped().is_some() => {
                (addr.to_canonical(), prefix - 96)
            }
            _ => (addr, prefix),
        };
        if prefix > max_prefix(addr) {
            return Err(IpNetError::InvalidPrefix);
        }
        if mask(addr, prefix) != addr {
            return Err(IpNetError::HostBitsSet);
        }
        Ok(IpNet { addr, prefix })
    }

    /// The network's first address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the network (an IPv4-mapped IPv6 address as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(s: &str) -> Result<IpNet, IpNetError> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| IpNetError::InvalidAddress)?;
        let prefix = match prefix {
            None => max_prefix(addr),
            Some(p) if (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map_err(|_| IpNetError::InvalidPrefix)?
            }
            Some(_) => return Err(IpNetError::InvalidPrefix),
        };
        IpNet::new(addr, prefix)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Which header the trusted proxies in front of the server append the client's address to
/// ([`ClientIpKey::behind_proxies`]).
///
/// One header, configured, never a guess among several: a proxy that appends to
/// `X-Forwarded-For` passes a `Forwarded` header the client made up untouched, so reading
/// whichever header is present would let the client choose its own key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`: addresses, optionally with a port
    /// (`203.0.113.7:4711`, `[2001:db8::1]:443`).
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239): the `for=` parameter of each element,
    /// e.g. `for=192.0.2.60;proto=https, for="[2001:db8::1]:443"`.
    Forwarded,
    /// `X-Real-IP: 203.0.113.7`: one address, set by the proxy (nginx's `$remote_addr`).
    XRealIp,
}

impl ProxyHeader {
    /// The header's name.
    pub fn name(self) -> HeaderName {
        match self {
            ProxyHeader::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
            ProxyHeader::Forwarded => FORWARDED,
            ProxyHeader::XRealIp => HeaderName::from_static("x-real-ip"),
        }
    }
}

/// Reads a request's peer address from its extensions.
pub type PeerAddrFn = fn(&Extensions) -> Option<IpAddr>;

/// The client's IP address as the key, `ip:` and the address in canonical text: each IPv4
/// address its own key (`ip:203.0.113.7`), each IPv6 `/64` one key (`ip:2001:db8:1:2::/64`,
/// since one customer usually owns a whole `/64`). IPv4-mapped IPv6 addresses
/// (`::ffff:203.0.113.7`) are their IPv4 addresses. [`ipv4_prefix`](ClientIpKey::ipv4_prefix)
/// and [`ipv6_prefix`](ClientIpKey::ipv6_prefix) change the grouping.
///
/// The peer address comes from the request's extensions: a [`ClientAddr`] by default, or what
/// [`peer_addr`](ClientIpKey::peer_addr) reads (axum's `ConnectInfo`). A request without one
/// has no key (`401`, or the layer's fallback key): the server is not set up to tell.
///
/// # Behind proxies
///
/// [`ClientIpKey::peer`] keys every request by its peer and ignores forwarding headers, which
/// anyone can send. [`ClientIpKey::behind_proxies`] reads one [`ProxyHeader`], but only when
/// the peer is in a trusted network, and only as far as trusted proxies wrote it:
///
/// 1. A peer outside the trusted networks is the client; the header is not read.
/// 2. Otherwise the header's entries (all its lines, in order, then their comma-separated
///    entries) are walked from the right, starting from the peer. A trusted address is
///    another proxy: the walk goes on to its left. The first untrusted address is the client.
/// 3. A malformed entry where the walk reads (not an address: garbage, `unknown`, an
///    obfuscated `_hidden`, an empty entry, an IPv6 zone) ends the walk at the last trusted
///    hop: the client is the proxy that passed on the malformed entry (the peer, if it is the
///    right-most one). So is a missing header, and a chain of trusted addresses only ends at
///    its left-most address.
///
/// So the key is always an address that the peer or a trusted proxy saw as its own peer,
/// never text the client wrote: entries a client prepends sit to the left of the one its
/// proxy appended and are never reached, and a malformed header makes the key the proxy's,
/// the same for every such request, never a fresh one. Trust only your proxies' networks: a
/// client inside one is taken as a proxy, and its header believed.
///
/// # Example
///
/// ```
/// use std::net::SocketAddr;
/// use http::Request;
/// use ratewindow::tower::{ClientAddr, ClientIpKey, KeyExtractor, ProxyHeader};
///
/// let key = ClientIpKey::behind_proxies(["10.0.0.0/8".parse()?], ProxyHeader::XForwardedFor);
/// let via_proxy = |peer: [u8; 4], xff: &str| {
///     let mut request = Request::get("/").header("x-forwarded-for", xff).body(()).unwrap();
///     request.extensions_mut().insert(ClientAddr(SocketAddr::from((peer, 41000))));
///     key.extract(&request)
/// };
/// // From the proxy, the client it appended; a forged entry before it changes nothing.
/// assert_eq!(via_proxy([10, 0, 0, 2], "203.0.113.7").as_deref(), Some("ip:203.0.113.7"));
/// assert_eq!(via_proxy([10, 0, 0, 2], "1.2.3.4, 203.0.113.7").as_deref(), Some("ip:203.0.113.7"));
/// // A client connecting directly is its own address, whatever it sends.
/// assert_eq!(via_proxy([198, 51, 100, 9], "1.2.3.4").as_deref(), Some("ip:198.51.100.9"));
/// // IPv6 clients by /64; a malformed entry keys on the proxy.
/// assert_eq!(via_proxy([10, 0, 0, 2], "2001:db8:1:2::abcd").as_deref(), Some("ip:2001:db8:1:2::/64"));
/// assert_eq!(via_proxy([10, 0, 0, 2], "unknown").as_deref(), Some("ip:10.0.0.2"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClientIpKey {
    trusted: Arc<[IpNet]>,
    header: ProxyHeader,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
    peer: PeerAddrFn,
}

impl Default for ClientIpKey {
    fn default() -> ClientIpKey {
        ClientIpKey::peer()
    }
}

impl ClientIpKey {
    /// Keyed by the connection's peer address, with no proxies trusted: for a server that
    /// clients reach directly.
    pub fn peer() -> ClientIpKey {
        ClientIpKey::behind_proxies([], ProxyHeader::default())
    }

    /// Keyed by the client that the proxies in the `trusted` networks forwarded for, as they
    /// recorded it in `header` (see [Behind proxies](ClientIpKey#behind-proxies)).
    pub fn behind_proxies(
        trusted: impl IntoIterator<Item = IpNet>,
        header: ProxyHeader,
    ) -> ClientIpKey {
        ClientIpKey {
            trusted: trusted.into_iter().collect(),
            header,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            peer: |extensions| extensions.get::<ClientAddr>().map(|addr| addr.0.ip()),
        }
    }

    /// IPv4 clients share a key per network of this prefix length (32 by default: one key
    /// per address); the key is then the network, e.g. `ip:203.0.113.0/24`.
    ///
    /// A prefix above 32 is taken as 32.
    pub fn ipv4_prefix(mut self, prefix: u8) -> ClientIpKey {
        self.ipv4_prefix = prefix.min(32);
        self
    }

    /// IPv6 clients share a key per network of this prefix length (64 by default; 128 for
    /// one key per address, then written without a prefix). A prefix above 128 is taken as 128.
    pub fn ipv6_prefix(mut self, prefix: u8) -> ClientIpKey {
        self.ipv6_prefix = prefix.min(128);
        self
    }

    /// Reads the peer address with `peer` instead of from a [`ClientAddr`], e.g. axum's
    /// `ConnectInfo`: `|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip())`.
    pub fn peer_addr(mut self, peer: PeerAddrFn) -> ClientIpKey {
        self.peer = peer;
        self
    }

    /// The client's address for `request`, before grouping (IPv4-mapped addresses as IPv4),
    /// or `None` if the request carries no peer address.
    pub fn client_ip<B>(&self, request: &Request<B>) -> Option<IpAddr> {
        let peer = (self.peer)(request.extensions())?.to_canonical();
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let lines = request.headers().get_all(self.header.name());
        let lines = lines.iter().rev().map(HeaderValue::as_bytes);
        Some(match self.header {
            ProxyHeader::XForwardedFor => self.walk(
                peer,
                lines.flat_map(|line| line.rsplit(|&b| b == b',').map(parse_node)),
            ),
            ProxyHeader::Forwarded => self.walk(
                peer,
                lines.flat_map(|line| {
                    split_unquoted(line, b',')
                        .into_iter()
                        .rev()
                        .map(forwarded_for)
                }),
            ),
            ProxyHeader::XRealIp => self.walk(peer, lines.map(parse_node)),
        })
    }

    /// The key of the client at `ip`: `ip:` and its address, or its network when grouped.
    pub fn key_for(&self, ip: IpAddr) -> String {
        let ip = ip.to_canonical();
        let prefix = match ip {
            IpAddr::V4(_) => self.ipv4_prefix,
            IpAddr::V6(_) => self.ipv6_prefix,
        };
        let net = mask(ip, prefix);
        if prefix == max_prefix(ip) {
            format!("ip:{net}")
        } else {
            format!("ip:{net}/{prefix}")
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// The walk of [Behind proxies](ClientIpKey#behind-proxies): `entries` right to left,
    /// `None` for a malformed one.
    fn walk(&self, peer: IpAddr, entries: impl Iterator<Item = Option<IpAddr>>) -> IpAddr {
        let mut hop = peer;
        for entry in entries {
            let Some(ip) = entry else { break };
            hop = ip.to_canonical();
            if !self.is_trusted(hop) {
                break;
            }
        }
        hop
    }
}

impl<B> KeyExtractor<B> for ClientIpKey {
    fn extract(&self, request: &Request<B>) -> Option<String> {
        self.client_ip(request).map(|ip| self.key_for(ip))
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// `ip` with the bits after `prefix` cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// One node of a forwarding header, an address with an optional port: `192.0.2.7`,
/// `192.0.2.7:443`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443`, surrounded by
/// optional spaces and tabs. `None` for anything else.
fn parse_node(node: &[u8]) -> Option<IpAddr> {
    let node = std::str::from_utf8(node.trim_ascii()).ok()?;
    if let Some(rest) = node.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = inside.parse().ok()?;
        return (after.is_empty() || after.strip_prefix(':').is_some_and(is_port))
            .then_some(IpAddr::V6(ip));
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    let (host, port) = node.split_once(':')?;
    let ip: Ipv4Addr = host.parse().ok()?;
    is_port(port).then_some(IpAddr::V4(ip))
}

/// A port number, or an obfuscated port (`_abc`) of RFC 7239.
fn is_port(port: &str) -> bool {
    match port.strip_prefix('_') {
        Some(obfuscated) => {
            !obfuscated.is_empty()
                && obfuscated
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        }
        None => {
            (1..=5).contains(&port.len())
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok()
        }
    }
}

/// The address of one `Forwarded` element's `for` parameter: `None` if the element has none,
/// has two, or its value is not an address (`unknown`, `_hidden`, garbage).
fn forwarded_for(element: &[u8]) -> Option<IpAddr> {
    let mut value = None;
    for pair in split_unquoted(element, b';') {
        let pair = pair.trim_ascii();
        let equals = pair.iter().position(|&b| b == b'=')?;
        if pair[..equals].trim_ascii().eq_ignore_ascii_case(b"for") {
            if value.is_some() {
                return None;
            }
            value = Some(pair[equals + 1..].trim_ascii());
        }
    }
    let value = value?;
    let value = match value.strip_prefix(b"\"") {
        Some(quoted) => {
            let inside = quoted.strip_suffix(b"\"")?;
            if inside.iter().any(|&b| b == b'"' || b == b'\\') {
                return None;
            }
            inside
        }
        None => value,
    };
    parse_node(value)
}

/// `bytes` split at each `separator` outside a quoted string (RFC 9110's `"..."`, with
/// `\` escapes). An unterminated quoted string runs to the end.
fn split_unquoted(bytes: &[u8], separator: u8) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if !quoted && b == separator {
            parts.push(&bytes[start..i]);
            start = i + 1;
        }
    }
    parts.push(&bytes[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_contain() {
        assert_eq!(net("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(net("192.0.2.1").to_string(), "192.0.2.1/32");
        assert_eq!(net("2001:db8::/32").to_string(), "2001:db8::/32");
        assert_eq!(net("::1").to_string(), "::1/128");
        assert_eq!(net("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(net("::ffff:10.0.0.0/104").to_string(), "10.0.0.0/8");
        assert!(net("0.0.0.0/0").contains(ip("255.255.255.255")));
        assert!(!net("0.0.0.0/0").contains(ip("::1")));
        assert!(net("::/0").contains(ip("2001:db8::1")));
        assert!(!net("::/0").contains(ip("::ffff:1.2.3.4")));
        assert!(net("10.0.0.0/8").contains(ip("::ffff:10.9.9.9")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!net("2001:db8::/32").contains(ip("2001:db9::1")));
        assert!(net("192.0.2.1").contains(ip("192.0.2.1")));
        assert!(!net("192.0.2.1").contains(ip("192.0.2.2")));
    }

    #[test]
    fn bad_networks_are_typed_errors() {
        for (text, error) in [
            ("", IpNetError::InvalidAddress),
            ("10.0.0/8", IpNetError::InvalidAddress),
            ("[::1]/128", IpNetError::InvalidAddress),
            ("example.com/8", IpNetError::InvalidAddress),
            ("10.0.0.0/", IpNetError::InvalidPrefix),
            ("10.0.0.0/33", IpNetError::InvalidPrefix),
            ("10.0.0.0/+8", IpNetError::InvalidPrefix),
            ("10.0.0.0/-1", IpNetError::InvalidPrefix),
            ("10.0.0.0/0008", IpNetError::InvalidPrefix),
            ("10.0.0.0/8/8", IpNetError::InvalidPrefix),
            ("::/129", IpNetError::InvalidPrefix),
            ("::/256", IpNetError::InvalidPrefix),
            ("10.0.0.1/8", IpNetError::HostBitsSet),
            ("2001:db8::1/64", IpNetError::HostBitsSet),
        ] {
            assert_eq!(text.parse::<IpNet>(), Err(error), "{text:?}");
        }
        assert_eq!(
            IpNet::new(ip("1.2.3.0"), 33),
            Err(IpNetError::InvalidPrefix)
        );
        let error: Box<dyn std::error::Error> = Box::new(IpNetError::HostBitsSet);
        assert!(error.to_string().contains("after the prefix"));
    }

    #[test]
    fn nodes_parse_with_ports_and_brackets() {
        for (text, expected) in [
            ("192.0.2.7", Some("192.0.2.7")),
            (" \t192.0.2.7 ", Some("192.0.2.7")),
            ("192.0.2.7:443", Some("192.0.2.7")),
            ("192.0.2.7:_port", Some("192.0.2.7")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("[2001:db8::1]:443", Some("2001:db8::1")),
            ("::ffff:1.2.3.4", Some("::ffff:1.2.3.4")),
            ("", None),
            ("unknown", None),
            ("_hidden", None),
            ("192.0.2.7:", None),
            ("192.0.2.7:65536", None),
            ("192.0.2.7:44a", None),
            ("192.0.2.7:_", None),
            ("192.0.2.7:80:80", None),
            ("[192.0.2.7]", None),
            ("[2001:db8::1", None),
            ("[2001:db8::1]443", None),
            ("2001:db8::1:443x", None),
            ("fe80::1%eth0", None),
            ("01.2.3.4", None),
            ("\"192.0.2.7\"", None),
        ] {
            assert_eq!(parse_node(text.as_bytes()), expected.map(ip), "{text:?}");
        }
        assert_eq!(parse_node(b"192.0.2.7\xff"), None);
    }

    #[test]
    fn forwarded_elements() {
        for (text, expected) in [
            ("for=192.0.2.60", Some("192.0.2.60")),
            (
                "For=192.0.2.60;proto=http;by=203.0.113.43",
                Some("192.0.2.60"),
            ),
            ("proto=https; for=\"192.0.2.60:8080\"", Some("192.0.2.60")),
            (
                "for=\"[2001:db8:cafe::17]:4711\"",
                Some("2001:db8:cafe::17"),
            ),
            ("for=\"[2001:db8:cafe::17]\"", Some("2001:db8:cafe::17")),
            ("for=unknown", None),
            ("for=_hidden", None),
            ("for=\"_gazonk\"", None),
            ("proto=https", None),
            ("for=192.0.2.60;for=192.0.2.61", None),
            ("for=\"192.0.2.60", None),
            ("for=\"192.0.2.60\\\"\"", None),
            ("for", None),
            ("", None),
        ] {
            assert_eq!(forwarded_for(text.as_bytes()), expected.map(ip), "{text:?}");
        }
    }

    #[test]
    fn splits_respect_quotes() {
        let parts = split_unquoted(br#"for="a,b";x="c\",d", for=e"#, b',');
        assert_eq!(parts, [&br#"for="a,b";x="c\",d""#[..], b" for=e"]);
        assert_eq!(split_unquoted(b"", b','), [b""]);
        assert_eq!(split_unquoted(br#"a,"b,c"#, b','), [&b"a"[..], br#""b,c"#]);
    }

    fn proxied(peer: &str, header: &str, lines: &[&str]) -> Request<()> {
        let mut request = Request::new(());
        for line in lines {
            request
                .headers_mut()
                .append(HeaderName::from_bytes(header.as_bytes()).unwrap(), {
                    HeaderValue::from_bytes(line.as_bytes()).unwrap()
                });
        }
        request
            .extensions_mut()
            .insert(ClientAddr(SocketAddr::new(ip(peer), 40000)));
        request
    }

    #[test]
    fn the_walk_stops_at_the_first_untrusted_or_malformed_entry() {
        let key = ClientIpKey::behind_proxies(
            [net("10.0.0.0/8"), net("2001:db8:ffff::/48")],
            ProxyHeader::XForwardedFor,
        );
        let xff = "x-forwarded-for";
        for (peer, lines, expected) in [
            // Not from a proxy: the peer.
            ("203.0.113.1", &["198.51.100.1"][..], "203.0.113.1"),
            // From a proxy: the right-most untrusted entry.
            ("10.0.0.1", &["198.51.100.1"], "198.51.100.1"),
            ("10.0.0.1", &["1.1.1.1, 198.51.100.1"], "198.51.100.1"),
            (
                "10.0.0.1",
                &["1.1.1.1, 198.51.100.1, 10.0.0.2"],
                "198.51.100.1",
            ),
            (
                "10.0.0.1",
                &["1.1.1.1", "198.51.100.1", "10.0.0.2"],
                "198.51.100.1",
            ),
            (
                "10.0.0.1",
                &["1.1.1.1, 198.51.100.1", "10.0.0.2"],
                "198.51.100.1",
            ),
            ("::ffff:10.0.0.1", &["::ffff:198.51.100.1"], "198.51.100.1"),
            ("2001:db8:ffff::1", &["2001:db8::5"], "2001:db8::5"),
            // Malformed where the walk reads: the last trusted hop.
            ("10.0.0.1", &["198.51.100.1, garbage"], "10.0.0.1"),
            ("10.0.0.1", &["198.51.100.1, garbage, 10.0.0.2"], "10.0.0.2"),
            ("10.0.0.1", &["198.51.100.1,"], "10.0.0.1"),
            ("10.0.0.1", &[""], "10.0.0.1"),
            ("10.0.0.1", &["unknown"], "10.0.0.1"),
            // Malformed where the walk does not read: ignored.
            ("10.0.0.1", &["garbage, 198.51.100.1"], "198.51.100.1"),
            ("10.0.0.1", &["garbage", "198.51.100.1"], "198.51.100.1"),
            // No header, or only proxies: the left-most trusted address.
            ("10.0.0.1", &[], "10.0.0.1"),
            ("10.0.0.1", &["10.0.0.3, 10.0.0.2"], "10.0.0.3"),
        ] {
            let request = proxied(peer, xff, lines);
            assert_eq!(
                key.client_ip(&request),
                Some(ip(expected)),
                "{peer} {lines:?}"
            );
        }
        // A peer-only key never reads the header.
        let request = proxied("10.0.0.1", xff, &["198.51.100.1"]);
        assert_eq!(
            ClientIpKey::peer().client_ip(&request),
            Some(ip("10.0.0.1"))
        );
        // No peer address, no key.
        assert_eq!(key.client_ip(&Request::new(())), None);
    }

    #[test]
    fn forwarded_and_x_real_ip_are_walked_alike() {
        let trusted = [net("10.0.0.0/8")];
        let forwarded = ClientIpKey::behind_proxies(trusted, ProxyHeader::Forwarded);
        for (lines, expected) in [
            (&["for=198.51.100.1;proto=https"][..], "198.51.100.1"),
            (&["for=1.1.1.1, for=\"[2001:db8::1]:443\""], "2001:db8::1"),
            (
                &["for=1.1.1.1", "for=198.51.100.1, for=10.0.0.2"],
                "198.51.100.1",
            ),
            (
                &["for=\"1.1.1.1,2.2.2.2\", for=198.51.100.1"],
                "198.51.100.1",
            ),
            (&["for=198.51.100.1, for=_hidden"], "10.0.0.1"),
            (&["for=198.51.100.1, proto=https"], "10.0.0.1"),
            (&["for=198.51.100.1, for=unknown;by=10.0.0.2"], "10.0.0.1"),
        ] {
            let request = proxied("10.0.0.1", "forwarded", lines);
            assert_eq!(
                forwarded.client_ip(&request),
                Some(ip(expected)),
                "{lines:?}"
            );
        }
        // The configured header only: X-Forwarded-For is not a Forwarded.
        let request = proxied("10.0.0.1", "x-forwarded-for", &["198.51.100.1"]);
        assert_eq!(forwarded.client_ip(&request), Some(ip("10.0.0.1")));

        let real_ip = ClientIpKey::behind_proxies(trusted, ProxyHeader::XRealIp);
        for (lines, expected) in [
            (&["198.51.100.1"][..], "198.51.100.1"),
            (&["198.51.100.1, 1.1.1.1"], "10.0.0.1"),
            (&["1.1.1.1", "198.51.100.1"], "198.51.100.1"),
        ] {
            let request = proxied("10.0.0.1", "x-real-ip", lines);
            assert_eq!(real_ip.client_ip(&request), Some(ip(expected)), "{lines:?}");
        }
    }

    #[test]
    fn keys_are_canonical_and_grouped() {
        let key = ClientIpKey::peer();
        assert_eq!(key.key_for(ip("203.0.113.7")), "ip:203.0.113.7");
        assert_eq!(key.key_for(ip("::ffff:203.0.113.7")), "ip:203.0.113.7");
        assert_eq!(
            key.key_for(ip("2001:DB8:1:2:aaaa::1")),
            "ip:2001:db8:1:2::/64"
        );
        assert_eq!(
            key.key_for(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            "ip:2001:db8:1:2::/64"
        );
        assert_eq!(key.key_for(ip("2001:db8:1:3::1")), "ip:2001:db8:1:3::/64");
        assert_eq!(key.key_for(ip("::1")), "ip:::/64");
        let key = key.ipv4_prefix(24).ipv6_prefix(128);
        assert_eq!(key.key_for(ip("203.0.113.7")), "ip:203.0.113.0/24");
        assert_eq!(key.key_for(ip("2001:db8:0:0:0::1")), "ip:2001:db8::1");
        let key = ClientIpKey::peer().ipv4_prefix(0).ipv6_prefix(0);
        assert_eq!(key.key_for(ip("203.0.113.7")), "ip:0.0.0.0/0");
        assert_eq!(key.key_for(ip("2001:db8::1")), "ip:::/0");
    }

    #[test]
    fn a_prefix_past_the_address_means_the_whole_address() {
        let key = ClientIpKey::peer().ipv4_prefix(33).ipv6_prefix(129);
        assert_eq!(key.key_for(ip("203.0.113.7")), "ip:203.0.113.7");
        assert_eq!(key.key_for(ip("2001:db8::1")), "ip:2001:db8::1");
    }
}
