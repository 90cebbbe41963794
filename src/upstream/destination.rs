//! Where a vendor call may go: `https` only and public unicast addresses only, unless config
//! `[upstreams]` relaxes it (tests and laptops).
//!
//! The rules are checked three times, because each check alone can be walked around: on the
//! base URL when an upstream is saved (a clear INVALID_ARGUMENT), on every request's URL (an IP
//! literal never reaches a resolver), and on every address a host name resolves to, at connect
//! time ([`GuardedResolver`]), so a DNS answer that changes after validation cannot point a call
//! inward. The client follows no redirect, which would bypass all three.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
};

use crate::config::UpstreamSettings;

/// The config key that allows plain `http://` base URLs.
const INSECURE_KEY: &str = "upstreams.allow_insecure_http";
/// The config key that allows loopback, private and other non-public destinations.
const PRIVATE_KEY: &str = "upstreams.allow_private_addresses";

/// Checks a base URL as an operator typed it: an absolute `https` URL of a server root, with no
/// credential, query or fragment in it, whose host (when an IP literal) is public.
///
/// The error describes what is wrong and names the config key that would allow it.
pub fn check_base_url(base_url: &str, rules: &UpstreamSettings) -> Result<(), String> {
    let shown = crate::domain::validate::quote(base_url);
    let url = Url::parse(base_url).map_err(|_| {
        format!(
            "{shown} is not a url: give the vendor's server root, e.g. `https://vendor.example.com`"
        )
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        // Not quoted: the text would be the password.
        return Err(
            "the url carries a user or password: put them in `credential`, never in the url"
                .to_owned(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{shown} carries a query or fragment: give the vendor's server root only"
        ));
    }
    check_url(&url, rules)
}

/// Checks the scheme and, when the host is an IP literal, the address of a URL about to be
/// requested. Host names are left to [`GuardedResolver`], which sees what they resolve to.
pub(super) fn check_url(url: &Url, rules: &UpstreamSettings) -> Result<(), String> {
    match url.scheme() {
        "https" => {}
        "http" if rules.allow_insecure_http => {}
        "http" => {
            return Err(format!(
                "`{url}` uses plain http, which would send the credential in clear: use `https://`, or set config `{INSECURE_KEY} = true` to allow it"
            ));
        }
        other => {
            return Err(format!("`{url}` has scheme `{other}`: use `https://`"));
        }
    }
    let Some(host) = url.host_str() else {
        return Err(format!(
            "`{url}` names no host: give the vendor's server root"
        ));
    };
    // The URL parser has already turned every IPv4 spelling (`0x7f.1`, `2130706433`) into
    // dotted form, so a literal parses here exactly when the connector would skip the resolver.
    let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return Ok(());
    };
    match non_public(ip) {
        Some(kind) if !rules.allow_private_addresses => Err(private_refusal(&ip.to_string(), kind)),
        _ => Ok(()),
    }
}

fn private_refusal(host: &str, kind: &str) -> String {
    format!(
        "`{host}` is a {kind} address, not a public one: name the vendor's public host, or set config `{PRIVATE_KEY} = true` to allow it"
    )
}

/// What kind of non-public address `ip` is, or `None` for a public unicast address.
///
/// IPv6 addresses that carry an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4) are
/// judged by the IPv4 address they carry, since that is where the packets end up.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        // 0.0.0.0/8: on Linux a connect to 0.x.y.z reaches the local host.
        (0, _, _) => "unspecified",
        (127, _, _) => "loopback",
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => "private",
        (100, 64..=127, _) => "shared (carrier-grade NAT)",
        (169, 254, _) => "link-local",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 0, 0) | (198, 18..=19, _) => "reserved",
        (224..=239, _, _) => "multicast",
        _ if ip.is_broadcast() => "broadcast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_kind(v4);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    // ::a.b.c.d (IPv4-compatible) and 64:ff9b::a.b.c.d (NAT64) carry the IPv4 address last.
    if s[..6] == [0; 6] || (s[..2] == [0x64, 0xff9b] && s[2..6] == [0; 4]) {
        return v4_kind(embedded(s[6], s[7]));
    }
    Some(match s[0] {
        // 6to4 (2002::/16) carries the IPv4 address of its relay right after the prefix.
        0x2002 => return v4_kind(embedded(s[1], s[2])),
        0x2001 if s[1] == 0x0db8 => "documentation",
        0x0100 if s[1..4] == [0; 3] => "reserved",
        x if x & 0xfe00 == 0xfc00 => "unique-local",
        x if x & 0xffc0 == 0xfe80 => "link-local",
        x if x & 0xffc0 == 0xfec0 => "site-local",
        x if x & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

/// A host name that resolved to no address the rules allow; found in a connect error's
/// sources, so the client can tell a refusal from an unreachable vendor.
#[derive(Debug)]
pub(super) struct ResolvedPrivate(String);

impl std::fmt::Display for ResolvedPrivate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ResolvedPrivate {}

/// The system resolver with every non-public address dropped from its answer; installed on
/// the shared client unless `upstreams.allow_private_addresses` is set. The connection is made
/// to an address this returned, so the check and the use see the same answer.
#[derive(Debug)]
pub(super) struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (public, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
                .into_iter()
                .partition(|addr| non_public(addr.ip()).is_none());
            if public.is_empty()
                && let Some(kind) = refused.first().and_then(|addr| non_public(addr.ip()))
            {
                let what =
                    format!("`{host}` resolves only to {kind} and other non-public addresses");
                return Err(Box::new(ResolvedPrivate(format!(
                    "{what}: name the vendor's public host, or set config `{PRIVATE_KEY} = true` to allow it"
                ))) as _);
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Option<&'static str> {
        non_public(text.parse().unwrap())
    }

    #[test]
    fn classifies_every_non_public_range() {
        let cases = [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("100.127.255.254", "shared (carrier-grade NAT)"),
            ("169.254.169.254", "link-local"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("192.0.0.8", "reserved"),
            ("198.18.0.1", "reserved"),
            ("192.0.2.1", "documentation"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::10.0.0.1", "private"),
            ("2002:7f00:1::", "loopback"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
        ];
        for (ip, want) in cases {
            assert_eq!(kind(ip), Some(want), "{ip}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.0.1",
            "192.169.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:0808:0808::",
            "fbff::1",
            "fe7f::1",
        ] {
            assert_eq!(kind(ip), None, "{ip}");
        }
    }

    fn strict() -> UpstreamSettings {
        UpstreamSettings::default()
    }

    #[test]
    fn base_urls_follow_the_rules() {
        assert_eq!(
            check_base_url("https://vendor.example.com/bb", &strict()),
            Ok(())
        );
        assert_eq!(check_base_url("https://8.8.8.8", &strict()), Ok(()));
        let refused = [
            ("http://vendor.example.com", INSECURE_KEY),
            ("https://127.0.0.1:8443", PRIVATE_KEY),
            ("https://10.0.0.1", PRIVATE_KEY),
            ("https://169.254.169.254", PRIVATE_KEY),
            ("https://[::1]:8443", PRIVATE_KEY),
            ("https://[::ffff:7f00:1]", PRIVATE_KEY),
            ("https://0x7f.1", PRIVATE_KEY),
            ("https://2130706433", PRIVATE_KEY),
            ("https://user:pw@vendor.example.com", "`credential`"),
            ("https://vendor.example.com/?a=b", "query"),
            ("ftp://vendor.example.com", "`https://`"),
            ("vendor.example.com", "not a url"),
        ];
        for (url, why) in refused {
            let err = check_base_url(url, &strict()).unwrap_err();
            assert!(err.contains(why), "{url}: {err}");
            assert!(!err.contains("pw@"), "{err}");
        }
        let open = UpstreamSettings {
            allow_insecure_http: true,
            allow_private_addresses: true,
            ..UpstreamSettings::default()
        };
        assert_eq!(check_base_url("http://127.0.0.1:8080", &open), Ok(()));
        assert_eq!(check_base_url("http://[::1]", &open), Ok(()));
    }

    #[tokio::test]
    async fn the_resolver_drops_non_public_answers() {
        let err = GuardedResolver
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("loopback"), "{err}");
        assert!(err.to_string().contains(PRIVATE_KEY), "{err}");
    }
}
