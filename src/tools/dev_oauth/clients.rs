//! The dev authorization server's client manager: the checks the reference provider,
//! `@atproto/oauth-provider` 0.15.15 (`src/client/client-manager.ts`, `client-utils.ts`,
//! `client.ts`) with `@atproto/oauth-types` 0.6.3 (`oauth-client-id-discoverable.ts`,
//! `oauth-client-metadata.ts`, `uri.ts`, `util.ts`) and `@atproto-labs/fetch` 0.2.3
//! (`fetch-response.ts`), makes of a confidential client, so that a client the
//! reference refuses is refused here too. Each rule, and what the dev server does:
//!
//! `client_id` (discoverable: the URL of its metadata document)
//! 1. `https` URL; an `https` loopback host (`localhost`, `127.0.0.1`, `[::1]`) refused.
//!    Enforced; [`ClientIds::AllowLocal`] also takes `http` and loopback.
//! 2. No user or password, no fragment. Enforced.
//! 3. A path other than `/`, not ending in `/`. Enforced.
//! 4. Canonical: the path as written is the path the URL parser yields (no `..`, `%2e`).
//!    Enforced.
//! 5. The host is not an IP literal. Enforced; `AllowLocal` takes IP literals.
//! 6. The host is a domain name of two labels or more whose TLD is not special-use
//!    (`.test`, `.local`, `.localhost`, `.invalid`, `.example`): `invalid_client_id`,
//!    "The client_id's TLD must not be a local hostname". Enforced; `AllowLocal` takes
//!    them (the reference's dev mode allows loopback clients for the same reason: tests
//!    run on 127.0.0.1).
//! 7. Loopback client ids (`http://localhost` without a path) are public native clients.
//!    Not supported: refused like any other invalid id (`invalid_client_metadata`,
//!    "Invalid client ID").
//!
//! Fetching the metadata and the JWKS (`fetchMetadataHandler`, `fetchJwksHandler`)
//! 8. `GET` with `Accept: application/json`; a redirect is an error, so is a status
//!    other than 2xx. Enforced (the fetch follows no redirect; 3xx is refused).
//! 9. Metadata: a `Content-Type` is required and its media type (parameters such as
//!    `charset` ignored) must be exactly `application/json`. Enforced:
//!    "Unexpected response Content-Type (x)", "Missing response Content-Type header".
//! 10. JWKS: the `Content-Type` may be absent; if present it must be exactly
//!     `application/json` (`application/jwk-set+json` is refused). Enforced.
//! 11. The body is JSON that the schema accepts. Enforced (rules below).
//!
//! Every failure above is 400 `invalid_client_metadata` with
//! `Unable to obtain client metadata for "<client_id>": <cause>` or
//! `Unable to obtain jwks from "<jwks_uri>" for "<client_id>": <cause>` (an id that
//! fails rules 1-5 is `invalid_client_metadata` "Invalid client ID", rule 6 is
//! `invalid_client_id`), as `InvalidClientMetadataError.from` words them.
//!
//! Metadata (`oauthClientMetadataSchema`, `validateClientMetadata`,
//! `validateDiscoverableClientMetadata`)
//! 12. `client_id` is present and equal to the id it was fetched as. Enforced.
//! 13. `redirect_uris`: a non-empty array. Each without credentials; `localhost`
//!     refused; `http://127.0.0.1` / `http://[::1]` only for native apps; other `http`
//!     refused; `https` not on a special-use name; private-use schemes only for native
//!     apps. Enforced for `https` and `http`; `AllowLocal` takes `http` loopback
//!     redirect URIs for web clients too. Private-use schemes: refused (native apps are
//!     public clients, not served here).
//! 14. `response_types` (default `["code"]`) includes `code`; `grant_types` (default
//!     `["authorization_code"]`) includes `authorization_code`, has no duplicates, and
//!     holds only `authorization_code` and `refresh_token` (`implicit` never), each in
//!     the server's `grant_types_supported`. Enforced.
//! 15. `scope` is present, includes `atproto`, has no duplicates. Enforced.
//! 16. `jwks` and `jwks_uri` are mutually exclusive; `jwks_uri`, `client_uri`,
//!     `policy_uri`, `tos_uri` and `logo_uri` are web URIs (`https` on a domain of two
//!     labels or more, not `.local`; or `http` on a loopback host). Enforced;
//!     `AllowLocal` takes `http` on any host.
//! 17. The OIDC parameters `default_max_age`, `userinfo_signed_response_alg`,
//!     `id_token_signed_response_alg`, `userinfo_encrypted_response_alg` are refused.
//!     Enforced.
//! 18. `client_uri`: not on a special-use name; same origin as the `client_id` and a
//!     parent path of it. Enforced (the name check is off under `AllowLocal`).
//! 19. `subject_type` is `public` if present. Enforced.
//! 20. `token_endpoint_auth_method` (default `client_secret_basic`, refused): `none`
//!     without `token_endpoint_auth_signing_alg`, or `private_key_jwt` with `jwks` or
//!     `jwks_uri` (a non-empty `jwks`) and `token_endpoint_auth_signing_alg`. Enforced.
//! 21. `authorization_encrypted_response_enc` and
//!     `tls_client_certificate_bound_access_tokens` are refused. Enforced.
//! 22. `dpop_bound_access_tokens` is `true`. Enforced.
//! 23. `application_type` is `web` (default) or `native`; `native` must use `none`.
//!     Enforced.
//! 24. `authorization_details_types` only if the server supports them: this one does
//!     not, so any is refused. Enforced.
//!
//! Client authentication (`client.ts` `authenticate`, `private_key_jwt`): the
//! assertion type is jwt-bearer, it verifies with a key of the client's JWKS, names the
//! client as `iss` and `sub` and the issuer as `aud`, has a `kid` and a single-use
//! `jti`, and is at most a minute old. Enforced in `client_auth` (401 `invalid_client`).

use serde_json::Value;

use crate::net::Outbound;

/// Which `client_id`s the server takes: the reference's production rules, or the dev
/// switch that tests and `atgate demo` turn on, since they run on 127.0.0.1 over http.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIds {
    /// As the reference in production: `https` on a public domain name (rules 1-6).
    DomainOnly,
    /// Also `http`, IP literals, loopback and special-use names (dev mode).
    AllowLocal,
}

/// A client the server refused: 400 with this OAuth `error` and `error_description`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `invalid_client_metadata`, `invalid_client_id` or `invalid_redirect_uri`.
    pub error: &'static str,
    /// The reference's wording.
    pub description: String,
}

fn metadata_error(description: impl Into<String>) -> Refusal {
    Refusal { error: "invalid_client_metadata", description: description.into() }
}

fn redirect_error(description: impl Into<String>) -> Refusal {
    Refusal { error: "invalid_redirect_uri", description: description.into() }
}

/// A client as loaded: its metadata document and, for `jwks_uri`, the fetched JWKS.
#[derive(Debug, Clone)]
pub struct Client {
    /// The metadata document.
    pub metadata: Value,
    /// Its keys (`jwks`, or the document `jwks_uri` names).
    pub jwks: Value,
}

/// Loads and checks a client as the reference's `ClientManager.getClient` does, from
/// the URL [`check_client_id`] made of its id.
pub async fn load(
    net: &Outbound,
    client_id: &str,
    url: &url::Url,
    rules: ClientIds,
    grants: &[&str],
) -> Result<Client, Refusal> {
    let metadata = fetch_json(net, url, true)
        .await
        .map_err(|cause| metadata_error(format!("Unable to obtain client metadata for \"{client_id}\": {cause}")))?;
    validate(client_id, url, &metadata, rules, grants)?;
    let jwks = match metadata.get("jwks_uri").and_then(Value::as_str) {
        Some(uri) => {
            let unable = |cause: String| {
                metadata_error(format!("Unable to obtain jwks from \"{uri}\" for \"{client_id}\": {cause}"))
            };
            let jwks_url = url::Url::parse(uri).map_err(|e| unable(e.to_string()))?;
            let jwks = fetch_json(net, &jwks_url, false).await.map_err(unable)?;
            if !jwks.get("keys").is_some_and(Value::is_array) {
                return Err(unable("Validation of \"keys\" failed with error: Required".into()));
            }
            jwks
        }
        None => metadata.get("jwks").cloned().unwrap_or_else(|| serde_json::json!({"keys": []})),
    };
    Ok(Client { metadata, jwks })
}

/// Rules 1-7: the URL of a discoverable client's metadata.
pub fn check_client_id(client_id: &str, rules: ClientIds) -> Result<url::Url, Refusal> {
    let invalid = || metadata_error(format!("Invalid client ID \"{client_id}\""));
    let url = url::Url::parse(client_id).map_err(|_| invalid())?;
    let local = rules == ClientIds::AllowLocal;
    let host = url.host_str().unwrap_or("");
    let https = url.scheme() == "https" && !is_loopback_host(host);
    if !(https || (local && url.scheme() == "http")) {
        return Err(invalid());
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(invalid());
    }
    if url.path() == "/" || url.path().ends_with('/') || raw_path(client_id) != Some(url.path()) {
        return Err(invalid());
    }
    if is_ip_literal(host) && !local {
        return Err(invalid());
    }
    if is_local_hostname(host) && !local {
        return Err(Refusal {
            error: "invalid_client_id",
            description: "The client_id's TLD must not be a local hostname".into(),
        });
    }
    Ok(url)
}

/// The path of an `http(s)` URL as written (`extractUrlPath` in oauth-types util.ts).
fn raw_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let rest = &rest[rest.find('/')?..];
    Some(rest.split(['?', '#']).next().unwrap_or(rest))
}

/// `isHostnameIP` (oauth-types util.ts): dotted digits or a bracketed IPv6 literal.
fn is_ip_literal(host: &str) -> bool {
    let v4 =
        host.split('.').count() == 4 && host.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    v4 || (host.starts_with('[') && host.ends_with(']'))
}

fn is_loopback_host(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

/// `isLocalHostname` (oauth-types util.ts): one label, or a special-use TLD (RFC 6761,
/// RFC 6762).
pub fn is_local_hostname(host: &str) -> bool {
    let labels: Vec<&str> = host.split('.').collect();
    let tld = labels.last().map(|t| t.to_ascii_lowercase()).unwrap_or_default();
    labels.len() < 2 || matches!(tld.as_str(), "test" | "local" | "localhost" | "invalid" | "example")
}

/// Rules 8-11: `GET` a JSON document; `required` says whether a `Content-Type` must
/// be sent (metadata) or may be absent (JWKS).
async fn fetch_json(net: &Outbound, url: &url::Url, required: bool) -> Result<Value, String> {
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::ACCEPT, http::HeaderValue::from_static("application/json"));
    let reply = net.exchange(http::Method::GET, url, headers, bytes::Bytes::new()).await.map_err(|e| e.to_string())?;
    if !reply.status.is_success() {
        return Err(format!("Unexpected status code {}", reply.status.as_u16()));
    }
    // fetch-response.ts `extractMime`: the part before `;`, trimmed, compared exactly.
    let mime = reply.headers.get(http::header::CONTENT_TYPE).map(|v| {
        let text = String::from_utf8_lossy(v.as_bytes()).into_owned();
        text.split(';').next().unwrap_or("").trim().to_owned()
    });
    match mime {
        Some(m) if m == "application/json" => {}
        Some(m) => return Err(format!("Unexpected response Content-Type ({m})")),
        None if required => return Err("Missing response Content-Type header".into()),
        None => {}
    }
    serde_json::from_slice(&reply.body).map_err(|_| "Unable to parse response as JSON".to_owned())
}

/// Rules 12-24.
fn validate(client_id: &str, id_url: &url::Url, m: &Value, rules: ClientIds, grants: &[&str]) -> Result<(), Refusal> {
    let local = rules == ClientIds::AllowLocal;
    let text = |k: &str| m.get(k).and_then(Value::as_str);
    let strings = |k: &str, default: &[&str]| -> Result<Vec<String>, Refusal> {
        match m.get(k) {
            None => Ok(default.iter().map(|s| (*s).to_owned()).collect()),
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| metadata_error(format!("Validation of \"{k}\" failed with error: Expected string"))),
            Some(_) => {
                Err(metadata_error(format!("Validation of \"{k}\" failed with error: Expected a non-empty array")))
            }
        }
    };
    if !m.is_object() {
        return Err(metadata_error("Validation failed with error: Expected object"));
    }
    if text("client_id") != Some(client_id) {
        return Err(metadata_error(if m.get("client_id").is_none() {
            "client_id is required for discoverable clients"
        } else {
            "client_id does not match"
        }));
    }
    for k in ["jwks_uri", "client_uri", "policy_uri", "tos_uri", "logo_uri"] {
        if m.get(k).is_some_and(|v| !v.as_str().is_some_and(|u| is_web_uri(u, local))) {
            return Err(metadata_error(format!("Validation of \"{k}\" failed with error: Invalid URL")));
        }
    }
    if m.get("jwks").is_some() && m.get("jwks_uri").is_some() {
        return Err(metadata_error("jwks_uri and jwks are mutually exclusive"));
    }
    for k in [
        "default_max_age",
        "userinfo_signed_response_alg",
        "id_token_signed_response_alg",
        "userinfo_encrypted_response_alg",
    ] {
        if m.get(k).is_some_and(|v| !v.is_null()) {
            return Err(metadata_error(format!("Unsupported \"{k}\" parameter")));
        }
    }
    if let Some(uri) = text("client_uri") {
        check_client_uri(id_url, uri, local)?;
    }
    let scopes: Vec<&str> = text("scope").ok_or_else(|| metadata_error("Missing scope property"))?.split(' ').collect();
    if !scopes.contains(&"atproto") {
        return Err(metadata_error("Missing \"atproto\" scope"));
    }
    if let Some(dup) = duplicate(&scopes) {
        return Err(metadata_error(format!("Duplicate scope \"{dup}\"")));
    }
    let grant_types = strings("grant_types", &["authorization_code"])?;
    let grant_refs: Vec<&str> = grant_types.iter().map(String::as_str).collect();
    if let Some(dup) = duplicate(&grant_refs) {
        return Err(metadata_error(format!("Duplicate grant type \"{dup}\"")));
    }
    for g in &grant_refs {
        match *g {
            "implicit" => return Err(metadata_error(format!("Grant type \"{g}\" is not allowed"))),
            "authorization_code" | "refresh_token" if grants.contains(g) => {}
            "authorization_code" | "refresh_token" => {
                return Err(metadata_error(format!("Unsupported grant type \"{g}\"")));
            }
            _ => return Err(metadata_error(format!("Grant type \"{g}\" is not supported"))),
        }
    }
    if m.get("subject_type").is_some_and(|s| s.as_str() != Some("public")) {
        return Err(metadata_error("Only \"public\" subject_type is supported"));
    }
    let method = text("token_endpoint_auth_method").unwrap_or("client_secret_basic");
    let signing_alg = text("token_endpoint_auth_signing_alg");
    match method {
        "none" if signing_alg.is_some() => {
            return Err(metadata_error(
                "token_endpoint_auth_method \"none\" must not have token_endpoint_auth_signing_alg",
            ));
        }
        "none" => {}
        "private_key_jwt" => {
            if m.get("jwks").is_none() && m.get("jwks_uri").is_none() {
                return Err(metadata_error("private_key_jwt auth method requires jwks or jwks_uri"));
            }
            if m.get("jwks").is_some_and(|j| j.get("keys").and_then(Value::as_array).is_none_or(Vec::is_empty)) {
                return Err(metadata_error("private_key_jwt auth method requires at least one key in jwks"));
            }
            if signing_alg.is_none() {
                return Err(metadata_error("Missing token_endpoint_auth_signing_alg client metadata"));
            }
        }
        other => {
            return Err(metadata_error(format!(
                "Unsupported client authentication method \"{other}\". Make sure \"token_endpoint_auth_method\" is set to one of: \"none\", \"private_key_jwt\""
            )));
        }
    }
    if m.get("authorization_encrypted_response_enc").is_some_and(|v| !v.is_null()) {
        return Err(metadata_error("Encrypted authorization response is not supported"));
    }
    if m.get("tls_client_certificate_bound_access_tokens") == Some(&Value::Bool(true)) {
        return Err(metadata_error("Mutual-TLS bound access tokens are not supported"));
    }
    if m.get("dpop_bound_access_tokens") != Some(&Value::Bool(true)) {
        return Err(metadata_error("\"dpop_bound_access_tokens\" must be true"));
    }
    if !strings("response_types", &["code"])?.iter().any(|r| r == "code") {
        return Err(metadata_error("response_types must include \"code\""));
    }
    if !grant_refs.contains(&"authorization_code") {
        return Err(metadata_error(
            "The \"code\" response type requires that \"grant_types\" contains \"authorization_code\"",
        ));
    }
    if m.get("authorization_details_types").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
        return Err(metadata_error("authorization_details_types are not supported"));
    }
    let native = match text("application_type").unwrap_or("web") {
        "web" => false,
        "native" => true,
        _ => return Err(metadata_error("Validation of \"application_type\" failed with error: Invalid enum value")),
    };
    if native && method != "none" {
        return Err(metadata_error("Native clients must authenticate using \"none\" method"));
    }
    let redirects = strings("redirect_uris", &[])?;
    if redirects.is_empty() {
        return Err(metadata_error("At least one redirect_uri is required"));
    }
    redirects.iter().try_for_each(|r| check_redirect_uri(r, native, local))
}

/// Rule 18: `client_uri` on a real name, and a parent of the `client_id` URL.
fn check_client_uri(id_url: &url::Url, uri: &str, local: bool) -> Result<(), Refusal> {
    let u = url::Url::parse(uri).map_err(|_| metadata_error("client_uri is not a URL"))?;
    if !local && is_local_hostname(u.host_str().unwrap_or("")) {
        return Err(metadata_error("client_uri hostname is invalid"));
    }
    if u.origin() != id_url.origin() {
        return Err(metadata_error("client_uri must have the same origin as the client_id"));
    }
    let parent = if u.path().ends_with('/') { u.path().to_owned() } else { format!("{}/", u.path()) };
    if id_url.path() != u.path() && !id_url.path().starts_with(&parent) {
        return Err(metadata_error("client_uri must be a parent URL of the client_id"));
    }
    Ok(())
}

/// Rule 13 for one redirect URI.
fn check_redirect_uri(uri: &str, native: bool, local: bool) -> Result<(), Refusal> {
    let u = url::Url::parse(uri).map_err(|_| redirect_error(format!("Invalid redirect URI {uri}")))?;
    if !u.username().is_empty() || u.password().is_some() {
        return Err(redirect_error(format!("Redirect URI {u} must not contain credentials")));
    }
    let host = u.host_str().unwrap_or("");
    match (u.scheme(), host) {
        (_, "localhost") if !local => {
            Err(redirect_error(format!("Loopback redirect URI {u} is not allowed (use explicit IPs instead)")))
        }
        ("http", "127.0.0.1" | "[::1]") if native || local => Ok(()),
        (_, "127.0.0.1" | "[::1]") if native => Err(redirect_error(format!("Loopback redirect URI {u} must use HTTP"))),
        (_, "127.0.0.1" | "[::1]") if !local => {
            Err(redirect_error("Loopback redirect URIs are only allowed for native apps"))
        }
        ("http", _) if local => Ok(()),
        ("http", _) => Err(redirect_error("Only loopback redirect URIs are allowed to use the \"http\" scheme")),
        ("https", h) if !local && is_local_hostname(h) => {
            Err(redirect_error(format!("Redirect URI \"{u}\"'s domain name must not be a local hostname")))
        }
        ("https", _) => Ok(()),
        (scheme, _) if scheme.contains('.') => {
            Err(redirect_error("Private-Use URI Scheme redirect URI are only allowed for native apps"))
        }
        (scheme, _) => Err(redirect_error(format!("Invalid redirect URI scheme \"{scheme}:\""))),
    }
}

/// Rule 16: `webUriSchema`: `https` on a domain of two labels or more that is not
/// `.local` and not loopback (IP literals pass), or `http` on a loopback host.
fn is_web_uri(uri: &str, local: bool) -> bool {
    let Ok(u) = url::Url::parse(uri) else { return false };
    let host = u.host_str().unwrap_or("");
    match u.scheme() {
        "http" => local || is_loopback_host(host),
        "https" if local => true,
        "https" => {
            !is_loopback_host(host) && (is_ip_literal(host) || (host.contains('.') && !host.ends_with(".local")))
        }
        _ => false,
    }
}

fn duplicate<'a>(items: &[&'a str]) -> Option<&'a str> {
    items.iter().enumerate().find(|(i, s)| items[i + 1..].contains(s)).map(|(_, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_follow_the_reference_outside_dev_mode() {
        let ok = "https://app.example.com/oauth/client-metadata.json";
        assert!(check_client_id(ok, ClientIds::DomainOnly).is_ok());
        for bad in [
            "http://app.example.com/oauth/client-metadata.json",
            "https://127.0.0.1/oauth/client-metadata.json",
            "https://[::1]/oauth/client-metadata.json",
            "https://localhost/oauth/client-metadata.json",
            "https://10.0.0.1:8443/c.json",
            "https://app.example.com/",
            "https://app.example.com/oauth/",
            "https://app.example.com/oauth/../c.json",
            "https://u:p@app.example.com/c.json",
            "https://app.example.com/c.json#x",
        ] {
            let e = check_client_id(bad, ClientIds::DomainOnly).unwrap_err();
            assert_eq!(e.error, "invalid_client_metadata", "{bad}");
        }
        for special in
            ["https://app.test/c.json", "https://a.local/c.json", "https://x.example/c.json", "https://intranet/c.json"]
        {
            let e = check_client_id(special, ClientIds::DomainOnly).unwrap_err();
            assert_eq!(
                e,
                Refusal {
                    error: "invalid_client_id",
                    description: "The client_id's TLD must not be a local hostname".into()
                }
            );
        }
        // The dev switch takes what tests and the demo use.
        for dev in ["http://127.0.0.1:8080/oauth/client-metadata.json", "https://app.test/c.json"] {
            assert!(check_client_id(dev, ClientIds::AllowLocal).is_ok(), "{dev}");
        }
        assert!(check_client_id("http://127.0.0.1:8080/", ClientIds::AllowLocal).is_err());
    }

    fn atgate_like() -> Value {
        serde_json::json!({
            "client_id": "https://app.example.com/oauth/client-metadata.json",
            "client_uri": "https://app.example.com",
            "redirect_uris": ["https://app.example.com/oauth/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "scope": "atproto transition:generic",
            "application_type": "web",
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "ES256",
            "jwks_uri": "https://app.example.com/oauth/jwks.json",
            "dpop_bound_access_tokens": true,
        })
    }

    fn check(m: &Value) -> Result<(), Refusal> {
        let id = "https://app.example.com/oauth/client-metadata.json";
        let url = url::Url::parse(id).unwrap();
        validate(id, &url, m, ClientIds::DomainOnly, &["authorization_code", "refresh_token"])
    }

    #[test]
    fn metadata_rules_of_the_reference() {
        assert_eq!(check(&atgate_like()), Ok(()));
        let cases: [(&str, Value, &str); 12] = [
            ("scope", serde_json::json!("transition:generic"), "Missing \"atproto\" scope"),
            ("scope", serde_json::json!("atproto atproto"), "Duplicate scope \"atproto\""),
            ("dpop_bound_access_tokens", Value::Null, "\"dpop_bound_access_tokens\" must be true"),
            (
                "token_endpoint_auth_method",
                serde_json::json!("client_secret_basic"),
                "Unsupported client authentication method",
            ),
            ("token_endpoint_auth_signing_alg", Value::Null, "Missing token_endpoint_auth_signing_alg"),
            (
                "grant_types",
                serde_json::json!(["authorization_code", "implicit"]),
                "Grant type \"implicit\" is not allowed",
            ),
            (
                "grant_types",
                serde_json::json!(["refresh_token"]),
                "requires that \"grant_types\" contains \"authorization_code\"",
            ),
            ("client_uri", serde_json::json!("https://other.example.com"), "same origin as the client_id"),
            ("client_uri", serde_json::json!("https://app.example.com/elsewhere"), "parent URL of the client_id"),
            ("client_id", serde_json::json!("https://evil.example.com/c.json"), "client_id does not match"),
            ("jwks", serde_json::json!({"keys": []}), "mutually exclusive"),
            ("default_max_age", serde_json::json!(60), "Unsupported \"default_max_age\" parameter"),
        ];
        for (field, value, want) in cases {
            let mut m = atgate_like();
            if value.is_null() {
                m.as_object_mut().unwrap().remove(field);
            } else {
                m[field] = value;
            }
            let e = check(&m).unwrap_err();
            assert!(e.description.contains(want), "{field}: {e:?}");
            assert_eq!(e.error, "invalid_client_metadata", "{field}");
        }
        let mut m = atgate_like();
        m["redirect_uris"] = serde_json::json!(["http://127.0.0.1:9/oauth/callback"]);
        assert_eq!(check(&m).unwrap_err().error, "invalid_redirect_uri", "loopback redirect for a web client");
    }

    /// A client on loopback serving its metadata and JWKS with the given content types
    /// (`None`: no header).
    async fn client_serving(metadata: Option<&'static str>, jwks: Option<&'static str>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let mut meta = atgate_like();
        meta["client_id"] = format!("{origin}/oauth/client-metadata.json").into();
        meta["client_uri"] = origin.clone().into();
        meta["jwks_uri"] = format!("{origin}/oauth/jwks.json").into();
        meta["redirect_uris"] = serde_json::json!([format!("{origin}/oauth/callback")]);
        let docs = std::sync::Arc::new((meta.to_string(), r#"{"keys":[]}"#.to_owned(), metadata, jwks));
        crate::tools::serve_http1(listener, docs, |d, req| async move {
            let (body, ct) =
                if req.uri().path().ends_with("jwks.json") { (d.1.clone(), d.3) } else { (d.0.clone(), d.2) };
            let mut res = http::Response::new(crate::body::full(body));
            if let Some(ct) = ct {
                res.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ct));
            }
            res
        });
        format!("{origin}/oauth/client-metadata.json")
    }

    #[tokio::test]
    async fn metadata_and_jwks_must_be_served_as_application_json() {
        let policy =
            crate::config::OutboundConfig { allow_private_addresses: true, allow_http: true, ..Default::default() };
        let net = Outbound::new(policy);
        let grants = ["authorization_code", "refresh_token"];
        let load = |id: String| {
            let net = net.clone();
            async move {
                let url = check_client_id(&id, ClientIds::AllowLocal)?;
                load(&net, &id, &url, ClientIds::AllowLocal, &grants).await
            }
        };
        let ok = client_serving(Some("application/json; charset=utf-8"), Some("application/json")).await;
        assert!(load(ok).await.is_ok(), "parameters after the media type are ignored");
        let no_jwks_type = client_serving(Some("application/json"), None).await;
        assert!(load(no_jwks_type).await.is_ok(), "a JWKS may come without a Content-Type");

        // What the reference answered atgate with before its JWKS was application/json.
        let id = client_serving(Some("application/json"), Some("application/jwk-set+json")).await;
        let e = load(id.clone()).await.unwrap_err();
        assert_eq!(e.error, "invalid_client_metadata");
        let jwks_uri = id.replace("client-metadata.json", "jwks.json");
        assert_eq!(
            e.description,
            format!(
                "Unable to obtain jwks from \"{jwks_uri}\" for \"{id}\": Unexpected response Content-Type (application/jwk-set+json)"
            )
        );
        for (meta, want) in [
            (Some("application/jwk-set+json"), "Unexpected response Content-Type (application/jwk-set+json)"),
            (Some("text/json"), "Unexpected response Content-Type (text/json)"),
            (None, "Missing response Content-Type header"),
        ] {
            let id = client_serving(meta, Some("application/json")).await;
            let e = load(id.clone()).await.unwrap_err();
            assert_eq!(e.error, "invalid_client_metadata");
            assert_eq!(e.description, format!("Unable to obtain client metadata for \"{id}\": {want}"));
        }
    }

    #[test]
    fn special_use_names() {
        for local in ["localhost", "app.test", "a.b.local", "x.example", "y.invalid", "single", "APP.TEST"] {
            assert!(is_local_hostname(local), "{local}");
        }
        for public in ["app.example.com", "bsky.social", "127.0.0.1"] {
            assert!(!is_local_hostname(public), "{public}");
        }
    }
}
