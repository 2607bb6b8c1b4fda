//! Handles (ATPROTO-AUTH.md §11.3-11.4): syntax, and resolution to a DID by DNS TXT
//! `_atproto.<handle>` and by HTTPS `/.well-known/atproto-did`.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;

use super::did::canonical;
use crate::net::Outbound;

/// TLDs that never name a resolvable handle (`test` is allowed only in development).
const REFUSED_TLDS: [&str; 8] = ["alt", "arpa", "example", "internal", "invalid", "local", "localhost", "onion"];

/// Whether `handle` (lowercase) is a syntactically valid, resolvable handle.
pub fn is_valid(handle: &str, allow_test: bool) -> bool {
    if handle.len() > 253 || handle == "handle.invalid" {
        return false;
    }
    let labels: Vec<&str> = handle.split('.').collect();
    if labels.len() < 2 {
        return false;
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let tld = labels[labels.len() - 1];
    labels.iter().all(|l| label_ok(l))
        && tld.as_bytes()[0].is_ascii_alphabetic()
        && !REFUSED_TLDS.contains(&tld)
        && (allow_test || tld != "test")
}

/// A DNS resolver: the given servers, or the system's (`/etc/resolv.conf`). `None` (HTTPS
/// resolution only) when the system configuration cannot be read.
pub(super) fn dns_resolver(servers: &[SocketAddr], timeout: Duration) -> Option<TokioResolver> {
    let mut builder = if servers.is_empty() {
        match TokioResolver::builder_tokio() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "no system DNS configuration: handles resolve over HTTPS only");
                return None;
            }
        }
    } else {
        let mut config = ResolverConfig::new();
        for addr in servers {
            config.add_name_server(NameServerConfig::new(*addr, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(*addr, Protocol::Tcp));
        }
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.timeout = timeout;
    opts.attempts = 1;
    Some(builder.build())
}

/// The DID in a TXT answer: exactly one `did=` value among the records (ATPROTO-AUTH.md
/// §11.4); chunks of one record are joined, nothing is trimmed. Canonical
/// ([`canonical`]); `None` for a DID that has no canonical form.
pub fn did_from_txt<'a>(records: impl IntoIterator<Item = &'a [Box<[u8]>]>) -> Option<String> {
    let mut found = None;
    for chunks in records {
        let value: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let Some(did) = value.strip_prefix(b"did=") else { continue };
        if found.is_some() {
            return None; // more than one: unresolved
        }
        found = Some(String::from_utf8(did.to_vec()).ok()?);
    }
    found.and_then(|d| canonical(&d).ok().map(|c| c.into_owned()))
}

/// The DID in an `atproto-did` file: its first line, trimmed, canonical.
pub fn did_from_well_known(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.lines().next()?.trim();
    canonical(line).ok().map(|c| c.into_owned())
}

/// Resolves a handle: DNS and HTTPS in parallel, DNS wins. `Err` only when neither gave
/// an answer and at least one failed for transport reasons (not worth caching long).
pub(super) async fn resolve(
    handle: &str,
    dns: Option<&TokioResolver>,
    net: &Outbound,
    timeout: Duration,
) -> Result<Option<String>, ()> {
    let by_dns = async {
        let Some(dns) = dns else { return Ok(None) };
        match tokio::time::timeout(timeout, dns.txt_lookup(format!("_atproto.{handle}."))).await {
            Ok(Ok(answer)) => Ok(did_from_txt(answer.iter().map(|txt| txt.txt_data()))),
            Ok(Err(e)) if e.is_no_records_found() || e.is_nx_domain() => Ok(None),
            _ => Err(()),
        }
    };
    let by_https = async {
        let Ok(url) = url::Url::parse(&format!("https://{handle}/.well-known/atproto-did")) else { return Ok(None) };
        match tokio::time::timeout(timeout, net.get_bytes(&url)).await {
            Ok(Ok(body)) => Ok(did_from_well_known(&body)),
            Ok(Err(crate::net::NetError::Status(_) | crate::net::NetError::Blocked(_))) => Ok(None),
            _ => Err(()),
        }
    };
    tokio::pin!(by_dns, by_https);
    // Whichever answers first; a DID from DNS ends the race, anything else waits for both.
    let (dns, https) = tokio::select! {
        d = &mut by_dns => match d {
            Ok(Some(did)) => return Ok(Some(did)),
            d => (d, by_https.await),
        },
        h = &mut by_https => (by_dns.await, h),
    };
    match (dns, https) {
        (Ok(Some(did)), _) | (_, Ok(Some(did))) => Ok(Some(did)),
        (Ok(None), Ok(None)) => Ok(None),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_syntax() {
        for ok in ["alice.bsky.social", "a.co", "xn--ls8h.example.com", "a-b.c1.org"] {
            assert!(is_valid(ok, false), "{ok}");
        }
        for bad in [
            "alice",
            "alice.",
            ".alice.com",
            "-a.com",
            "a-.com",
            "a.1com",
            "a_b.com",
            "handle.invalid",
            "x.local",
            "x.onion",
            "x.example",
            "x.test",
        ] {
            assert!(!is_valid(bad, false), "{bad}");
        }
        assert!(is_valid("alice.test", true));
        assert!(!is_valid(&format!("{}.com", "a".repeat(64)), false));
    }

    #[test]
    fn txt_records() {
        let rec = |parts: &[&str]| -> Vec<Box<[u8]>> { parts.iter().map(|p| p.as_bytes().into()).collect() };
        let one = [rec(&["did=did:plc:ewvi7nxzyoun6zhxrhs64oiz"]), rec(&["v=spf1"])];
        assert_eq!(did_from_txt(one.iter().map(Vec::as_slice)).as_deref(), Some("did:plc:ewvi7nxzyoun6zhxrhs64oiz"));
        // Chunks of one record are joined.
        let split = [rec(&["did=did:plc:ewvi7nxzy", "oun6zhxrhs64oiz"])];
        assert_eq!(did_from_txt(split.iter().map(Vec::as_slice)).as_deref(), Some("did:plc:ewvi7nxzyoun6zhxrhs64oiz"));
        let two = [rec(&["did=did:plc:aaaa"]), rec(&["did=did:plc:bbbb"])];
        assert_eq!(did_from_txt(two.iter().map(Vec::as_slice)), None);
        let untrimmed = [rec(&["did= did:plc:aaaa"])];
        assert_eq!(did_from_txt(untrimmed.iter().map(Vec::as_slice)), None);
        assert_eq!(did_from_txt(std::iter::empty()), None);
        let web = [rec(&["did=did:web:Example.COM"])];
        assert_eq!(did_from_txt(web.iter().map(Vec::as_slice)).as_deref(), Some("did:web:example.com"));
        let plc = [rec(&["did=did:plc:EWVI7NXZYOUN6ZHXRHS64OIZ"])];
        assert_eq!(did_from_txt(plc.iter().map(Vec::as_slice)), None);
    }

    #[test]
    fn well_known_bodies() {
        assert_eq!(did_from_well_known(b"did:plc:abc\n").as_deref(), Some("did:plc:abc"));
        assert_eq!(did_from_well_known(b"  did:plc:abc  \nmore").as_deref(), Some("did:plc:abc"));
        assert_eq!(did_from_well_known(b"<html>"), None);
        assert_eq!(did_from_well_known(b"\xff\xfe"), None);
        assert_eq!(did_from_well_known(b""), None);
        assert_eq!(did_from_well_known(b"did:web:EXAMPLE.com\n").as_deref(), Some("did:web:example.com"));
        assert_eq!(did_from_well_known(b"did:plc:ABC\n"), None);
    }
}
