//! Load generator for atgate: drives a gateway over loopback with pre-signed requests and
//! reports requests/s and latency percentiles.
//!
//!   atgate-load keys --dir D             # an AS signing key (D/as-key.json) and its JWKS (D/jwks.json)
//!   atgate-load run --url URL --mode M --dir D [--connections 32] [--seconds 10] [--rate R]
//!   atgate-load verify [--count 2000]    # the yardstick: one P-256 verification of a proof
//!
//! Modes: `plain` (no credentials), `dpop-cached` (one token, a fresh proof per request),
//! `dpop-fresh` (a fresh token and proof per request). Tokens are minted with D/as-key.json
//! for issuer `https://as.load.test` and audience `did:web:load.test`; every proof is signed
//! before the clock starts, with the nonce the gateway hands out, so the run measures the
//! gateway, not the client. Runs must stay under 120 s (the nonce's lifetime).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use atgate::body::{self, Body};
use atgate::jose::sign::SigningKey;
use atgate::tools::DpopSigner;
use clap::{Parser, Subcommand};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::json;

const ISSUER: &str = "https://as.load.test";
const AUDIENCE: &str = "did:web:load.test";

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write an AS signing key and its JWKS.
    Keys {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Drive the gateway.
    Run {
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "plain")]
        mode: String,
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Requests to pre-sign (defaults to 25,000 per second of run).
        #[arg(long)]
        requests: Option<usize>,
        /// Requests per second to offer, spread evenly over time (default: as fast as the
        /// connections go). Comparing targets at one rate keeps the kernel's per-wakeup
        /// costs equal between them.
        #[arg(long)]
        rate: Option<u64>,
    },
    /// Time ES256 verification of `count` distinct DPoP proofs with one key: the unit the
    /// DPoP cost goals are stated in. Under `valgrind --tool=callgrind
    /// --toggle-collect='*verify_all*'` it counts the instructions of exactly that loop.
    Verify {
        #[arg(long, default_value_t = 2000)]
        count: usize,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Keys { dir } => {
            std::fs::create_dir_all(&dir)?;
            let key = SigningKey::generate();
            let mut public = key.public_jwk();
            public["kid"] = json!("load-1");
            std::fs::write(dir.join("as-key.json"), key.private_jwk().to_string())?;
            std::fs::write(dir.join("jwks.json"), json!({"keys": [public]}).to_string())?;
            println!("issuer {ISSUER}, audience {AUDIENCE}, jwks {}", dir.join("jwks.json").display());
            Ok(())
        }
        Command::Verify { count } => {
            let signer = DpopSigner { key: SigningKey::generate() };
            let key = atgate::jose::Jwk::from_value(&signer.key.public_jwk())?.public_key()?;
            let proofs: Vec<String> = (0..count)
                .map(|i| signer.proof("GET", &format!("https://load.test/xrpc/x?{i}"), Some("token"), None, 0))
                .collect();
            let signed = proofs
                .iter()
                .map(|proof| atgate::jose::jws::parse(proof).map(|jws| (jws.signing_input, jws.signature)))
                .collect::<Result<Vec<_>, _>>()?;
            let started = Instant::now();
            let valid = verify_all(&key, &signed);
            let elapsed = started.elapsed();
            if valid != count {
                bail!("{} of {count} proofs failed to verify", count - valid);
            }
            println!(
                "verified={count} per_verify_us={:.1} verifies_per_s={:.0}",
                elapsed.as_secs_f64() * 1e6 / count as f64,
                count as f64 / elapsed.as_secs_f64()
            );
            Ok(())
        }
        Command::Run { url, mode, dir, connections, seconds, requests, rate } => {
            if seconds > 110 {
                bail!("runs must stay under 110 s: pre-signed proofs carry one nonce");
            }
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
            let count = requests.unwrap_or(25_000 * seconds as usize);
            rt.block_on(run(url, mode, dir, connections, seconds, count, rate))
        }
    }
}

/// Verifies each signature; the count that verified.
#[inline(never)]
fn verify_all(key: &atgate::jose::PublicKey, signed: &[(&str, Vec<u8>)]) -> usize {
    signed.iter().filter(|(input, sig)| key.verify(atgate::jose::Alg::Es256, input.as_bytes(), sig, false)).count()
}

struct Prepared {
    authorization: Option<String>,
    dpop: Option<String>,
}

fn mint(as_key: &SigningKey, jkt: &str, now: u64) -> String {
    let claims = json!({"jti": format!("tok-{}", atgate::jose::sign::random_id()), "sub": "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
        "iat": now, "exp": now + 600, "aud": AUDIENCE, "cnf": {"jkt": jkt}, "scope": "atproto transition:generic",
        "client_id": "https://load.test/client.json", "iss": ISSUER});
    as_key.sign_jwt(json!({"typ": "at+jwt", "kid": "load-1"}), &claims)
}

async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Body>,
    url: &http::Uri,
    p: &Prepared,
) -> anyhow::Result<(StatusCode, http::HeaderMap)> {
    let mut b = Request::get(url.clone()).header("host", url.authority().map(|a| a.as_str()).unwrap_or("localhost"));
    if let Some(a) = &p.authorization {
        b = b.header("authorization", a);
    }
    if let Some(d) = &p.dpop {
        b = b.header("dpop", d);
    }
    sender.ready().await?;
    let res = sender.send_request(b.body(body::empty())?).await?;
    let (parts, body) = res.into_parts();
    body.collect().await?;
    Ok((parts.status, parts.headers))
}

async fn connect(url: &http::Uri) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Body>> {
    let addr = format!("{}:{}", url.host().context("no host")?, url.port_u16().unwrap_or(80));
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn run(
    url: String,
    mode: String,
    dir: Option<PathBuf>,
    connections: usize,
    seconds: u64,
    count: usize,
    rate: Option<u64>,
) -> anyhow::Result<()> {
    let uri: http::Uri = url.parse()?;
    let prepared: Vec<Prepared> = match mode.as_str() {
        "plain" => (0..count).map(|_| Prepared { authorization: None, dpop: None }).collect(),
        "dpop-cached" | "dpop-fresh" => {
            let dir = dir.context("--dir with the AS key is needed for DPoP modes")?;
            let as_key =
                Arc::new(SigningKey::from_jwk(&serde_json::from_slice(&std::fs::read(dir.join("as-key.json"))?)?)?);
            let signer = Arc::new(DpopSigner { key: SigningKey::generate() });
            let now = atgate::auth::now_ms() / 1000;
            // One request without a nonce to learn the current one.
            let token = mint(&as_key, &signer.key.thumbprint(), now);
            let probe = Prepared {
                authorization: Some(format!("DPoP {token}")),
                dpop: Some(signer.proof("GET", &url, Some(&token), None, now)),
            };
            let (status, headers) = send(&mut connect(&uri).await?, &uri, &probe).await?;
            let nonce = headers.get("dpop-nonce").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let nonce = nonce.with_context(|| format!("no DPoP-Nonce from the gateway (status {status})"))?;
            let fresh = mode == "dpop-fresh";
            let started = Instant::now();
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
            let per = count.div_ceil(threads);
            let parts: Vec<Vec<Prepared>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        let (as_key, signer, token, nonce, url) = (&as_key, &signer, &token, &nonce, &url);
                        s.spawn(move || {
                            (0..per)
                                .map(|_| {
                                    let t =
                                        if fresh { mint(as_key, &signer.key.thumbprint(), now) } else { token.clone() };
                                    let proof = signer.proof("GET", url, Some(&t), Some(nonce), now);
                                    Prepared { authorization: Some(format!("DPoP {t}")), dpop: Some(proof) }
                                })
                                .collect()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().expect("signing thread")).collect()
            });
            eprintln!("pre-signed {} requests in {:.1} s", per * threads, started.elapsed().as_secs_f64());
            parts.into_iter().flatten().collect()
        }
        other => bail!("unknown mode {other} (plain, dpop-cached, dpop-fresh)"),
    };
    let prepared = Arc::new(prepared);
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (prepared, next, uri) = (prepared.clone(), next.clone(), uri.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let Ok(mut sender) = connect(&uri).await else { return (latencies, 1) };
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(p) = prepared.get(i) else { break };
                // Paced: request i is due at i/rate; latency counts from then, so a late
                // gateway shows in it rather than in a lower offered rate.
                let t = match rate {
                    Some(rate) => {
                        let due = started + Duration::from_nanos(i as u64 * 1_000_000_000 / rate.max(1));
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                match send(&mut sender, &uri, p).await {
                    Ok((s, _)) if s.is_success() => latencies.push(t.elapsed().as_micros() as u32),
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        match connect(&uri).await {
                            Ok(s) => sender = s,
                            Err(_) => break,
                        }
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct =
        |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0);
    if next.load(Ordering::Relaxed) >= prepared.len() {
        eprintln!("warning: ran out of pre-signed requests before the deadline; raise --requests");
    }
    println!(
        "mode={mode} ok={} errors={errors} seconds={elapsed:.2} rps={:.0} p50_us={} p99_us={}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}
