//! The HTTP plumbing shared by foil's OpenAI-compatible backends: an [`ApiConfig`] (server,
//! model, where the API key lives, timeout, retries, concurrency) and an [`HttpClient`] that
//! POSTs JSON to `{base_url}/v1/{path}` with retries, exponential backoff with full jitter,
//! `Retry-After`, a bound on requests in flight and a small scoped-thread pool.
//!
//! The API key is read from an environment variable whose *name* the config holds; the key
//! itself lives only in an [`ApiKey`], which never prints, and every message that a server
//! sends back is scrubbed of it before it reaches a log line or an error.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use foil_core::rng::{self, SplitMix64};
use foil_core::{Error, Result};
use serde_json::Value;
use tracing::{debug, warn};

use crate::retry::{full_jitter, parse_retry_after, MAX_RETRY_AFTER};

/// The environment variable the API key is read from unless the config names another.
pub const DEFAULT_API_KEY_ENV: &str = "OPENAI_API_KEY";

/// The largest response body read (a batch of 64 vectors of 4096 floats is about 5 MB).
const MAX_RESPONSE_BYTES: u64 = 256 << 20;
/// How much of a server's error message goes into a log line or an error.
const MAX_SERVER_MESSAGE_CHARS: usize = 300;

/// Where an OpenAI-compatible server is and how to talk to it. Holds no secret: the key is
/// read from the environment variable named by `api_key_env` when the client is built.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    /// The server, with or without a trailing `/v1`: `http://localhost:8080`,
    /// `https://api.openai.com/v1`. Requests go to `{base_url}/v1/{path}`.
    pub base_url: String,
    /// The `model` field of every request.
    pub model: String,
    /// The name of the environment variable holding the API key (default `OPENAI_API_KEY`);
    /// when it is unset or empty, requests carry no `Authorization` header.
    pub api_key_env: String,
    /// The limit for one request, from connecting to reading the whole answer (default 60 s).
    pub timeout: Duration,
    /// How many times a request is retried after a 408, 429, 5xx, connection error or
    /// timeout (default 5).
    pub max_retries: u32,
    /// How many of those retries may follow an answer that is not valid JSON or not in the
    /// expected schema (default 2): such answers seldom fix themselves.
    pub max_invalid_retries: u32,
    /// The most requests in flight at once, over all callers of one client (default 4).
    pub concurrency: usize,
    /// The first backoff; the `n`-th retry waits a uniform time in
    /// `[0, min(backoff_cap, backoff_base * 2^n))` (default 0.5 s).
    pub backoff_base: Duration,
    /// The longest backoff (default 30 s). A `Retry-After` from the server replaces it.
    pub backoff_cap: Duration,
    /// Seed of the backoff jitter.
    pub seed: u64,
}

impl ApiConfig {
    /// A config with the defaults for everything but the server and the model.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key_env: DEFAULT_API_KEY_ENV.to_string(),
            timeout: Duration::from_secs(60),
            max_retries: 5,
            max_invalid_retries: 2,
            concurrency: 4,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
            seed: 0,
        }
    }
}

/// An API key. It has no `Display`, its `Debug` is redacted, and it leaves only as an
/// `Authorization` header.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Reads the key from environment variable `var`: `None` when unset or blank. Surrounding
    /// whitespace is dropped; a key with other characters that cannot go in a header is an
    /// error (which does not quote it).
    pub fn from_env(var: &str) -> Result<Option<Self>> {
        let Some(raw) = std::env::var_os(var) else {
            return Ok(None);
        };
        let Some(raw) = raw.to_str() else {
            return Err(Error::Invalid(format!(
                "environment variable {var} does not hold valid UTF-8"
            )));
        };
        let key = raw.trim();
        if key.is_empty() {
            return Ok(None);
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Invalid(format!(
                "environment variable {var} holds characters that cannot go in an HTTP header"
            )));
        }
        Ok(Some(Self(key.to_string())))
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// `text` with every occurrence of the key replaced by `[redacted]`.
    fn scrub(&self, text: &str) -> String {
        text.replace(&self.0, "[redacted]")
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// A client for one OpenAI-compatible server: JSON in, JSON out, retried.
pub struct HttpClient {
    config: ApiConfig,
    /// `base_url` without a trailing `/` or `/v1`.
    root: String,
    api_key: Option<ApiKey>,
    agent: ureq::Agent,
    slots: Slots,
    calls: AtomicU64,
    /// The server answered 404 under `/v1` and serves its routes at the root instead
    /// (infinity's default): learned from the first request, then used for all.
    routes_at_root: AtomicBool,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("config", &self.config)
            .field("root", &self.root)
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

/// Why one attempt failed, and whether another may succeed.
#[derive(Debug)]
struct Failure {
    kind: FailureKind,
    status: Option<u16>,
    message: String,
    retry_after: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    /// Overload, server error, connection error or timeout: retried.
    Transient,
    /// An answer that is not valid JSON or not in the expected schema: retried a few times.
    Invalid,
    /// A client error or a bad configuration: not retried.
    Fatal,
}

impl Failure {
    fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            status: None,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl HttpClient {
    /// Builds a client, reading the API key from the environment variable the config names.
    pub fn new(config: ApiConfig) -> Result<Self> {
        let root = normalize_base_url(&config.base_url)?;
        if config.model.trim().is_empty() {
            return Err(Error::Invalid("the model name is empty".into()));
        }
        if config.concurrency == 0 {
            return Err(Error::Invalid("concurrency must be at least 1".into()));
        }
        if config.timeout.is_zero() {
            return Err(Error::Invalid(
                "the request timeout must be positive".into(),
            ));
        }
        let api_key = ApiKey::from_env(&config.api_key_env)?;
        let mut builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.timeout))
            // A redirected POST would turn into a GET and lose its body: report it instead.
            .max_redirects(0)
            .user_agent(concat!("foil/", env!("CARGO_PKG_VERSION")));
        if is_loopback(&root) {
            // A server on this machine is never reached through a proxy.
            builder = builder.proxy(None);
        }
        let agent = builder.build().new_agent();
        Ok(Self {
            slots: Slots::new(config.concurrency),
            config,
            root,
            api_key,
            agent,
            calls: AtomicU64::new(0),
            routes_at_root: AtomicBool::new(false),
        })
    }

    /// The config the client was built from.
    pub fn config(&self) -> &ApiConfig {
        &self.config
    }

    /// The server root: `base_url` without a trailing `/` or `/v1`, and without any
    /// `user:password@`.
    pub fn base_url(&self) -> String {
        strip_userinfo(&self.root)
    }

    /// Whether requests carry an `Authorization` header.
    pub fn has_api_key(&self) -> bool {
        self.api_key.is_some()
    }

    /// The URL of `path` (`embeddings`, `chat/completions`): under `/v1`, or at the root for a
    /// server that answered 404 under `/v1` but serves the route there.
    pub fn url(&self, path: &str) -> String {
        let path = path.trim_start_matches('/');
        if self.routes_at_root.load(Ordering::Relaxed) {
            format!("{}/{path}", self.root)
        } else {
            format!("{}/v1/{path}", self.root)
        }
    }

    /// After a 404 under `/v1`: tries the route at the server's root once. `Ok(Some(_))` when
    /// the server serves it there (remembered for every later request), `Ok(None)` when the
    /// root gave no better answer than the 404.
    fn try_root<T>(
        &self,
        path: &str,
        payload: &[u8],
        what: &str,
        parse: &impl Fn(Value) -> std::result::Result<T, String>,
    ) -> Result<Option<T>> {
        let url = format!("{}/{}", self.root, path.trim_start_matches('/'));
        match self.attempt(&url, payload) {
            Ok(value) => {
                let parsed = parse(value).map_err(|message| {
                    Error::Invalid(format!(
                        "{what}: POST {} answered, but not as an OpenAI-compatible server: {message}",
                        strip_userinfo(&url)
                    ))
                })?;
                if !self.routes_at_root.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        url = %strip_userinfo(&url),
                        "the server serves its routes at the root, not under /v1; using them there"
                    );
                }
                Ok(Some(parsed))
            }
            Err(_) => Ok(None),
        }
    }

    /// POSTs `body` to `/v1/{path}` and returns the JSON answer, with retries.
    pub fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        let what = format!("POST /v1/{}", path.trim_start_matches('/'));
        self.post_json_with(path, body, &what, Ok)
    }

    /// POSTs `body` to `/v1/{path}` and hands the JSON answer to `parse`, retrying on 408,
    /// 429, 5xx, connection errors and timeouts (up to `max_retries` times) and on answers
    /// that are not JSON or that `parse` rejects (up to `max_invalid_retries` of those
    /// retries). Other statuses fail at once with the server's message. `what` names the
    /// request in log lines and errors (`embeddings batch 3 of 8 (texts 128..192)`).
    pub fn post_json_with<T>(
        &self,
        path: &str,
        body: &Value,
        what: &str,
        parse: impl Fn(Value) -> std::result::Result<T, String>,
    ) -> Result<T> {
        let url = self.url(path);
        let display_url = strip_userinfo(&url);
        let payload = serde_json::to_vec(body)
            .map_err(|e| Error::Invalid(format!("{what}: cannot serialize the request: {e}")))?;
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let mut rng = SplitMix64::new(rng::derive(self.config.seed, call));
        let max_attempts = self.config.max_retries + 1;
        let mut attempt = 1u32;
        let mut invalid = 0u32;
        loop {
            let started = Instant::now();
            let outcome = self.attempt(&url, &payload).and_then(|value| {
                parse(value).map_err(|message| Failure::new(FailureKind::Invalid, message))
            });
            let mut failure = match outcome {
                Ok(parsed) => {
                    debug!(what, url = %display_url, attempt, elapsed_ms = started.elapsed().as_millis() as u64, "request done");
                    return Ok(parsed);
                }
                Err(failure) => failure,
            };
            failure.message = self.scrub(&failure.message);
            let exhausted = match failure.kind {
                FailureKind::Fatal => {
                    let at_v1 = !self.routes_at_root.load(Ordering::Relaxed);
                    if failure.status == Some(404) && at_v1 {
                        if let Some(parsed) = self.try_root(path, &payload, what, &parse)? {
                            return Ok(parsed);
                        }
                        return Err(Error::Invalid(format!(
                            "{what}: POST {display_url} failed: {}; {}/{} answered no better. \
                             The server serves this route elsewhere: give --base-url the URL \
                             its /v1 routes hang from (http://HOST:PORT/PREFIX for \
                             http://HOST:PORT/PREFIX/v1/{}), or start it with a /v1 prefix \
                             (infinity: --url-prefix /v1)",
                            failure.message,
                            strip_userinfo(&self.root),
                            path.trim_start_matches('/'),
                            path.trim_start_matches('/'),
                        )));
                    }
                    return Err(Error::Invalid(format!(
                        "{what}: POST {display_url} failed: {}",
                        failure.message
                    )));
                }
                FailureKind::Transient => attempt >= max_attempts,
                FailureKind::Invalid => {
                    invalid += 1;
                    attempt >= max_attempts || invalid > self.config.max_invalid_retries
                }
            };
            if exhausted {
                let problem = match failure.kind {
                    FailureKind::Invalid => "invalid response",
                    _ => "last error",
                };
                return Err(Error::Invalid(format!(
                    "{what}: POST {display_url} gave up after {attempt} attempt{}; {problem}: {}",
                    if attempt == 1 { "" } else { "s" },
                    failure.message
                )));
            }
            let wait = match failure.retry_after {
                Some(wait) => wait.min(MAX_RETRY_AFTER),
                None => full_jitter(
                    &mut rng,
                    attempt - 1,
                    self.config.backoff_base,
                    self.config.backoff_cap,
                ),
            };
            warn!(
                what,
                url = %display_url,
                status = failure.status,
                attempt,
                max_attempts,
                wait_ms = wait.as_millis() as u64,
                retry_after = failure.retry_after.is_some(),
                error = %failure.message,
                "request failed, retrying"
            );
            std::thread::sleep(wait);
            attempt += 1;
        }
    }

    /// Runs `job(0)`, …, `job(jobs - 1)` on up to `concurrency` scoped threads and returns the
    /// results in job order, or the error of the lowest-numbered job that failed (no new job
    /// starts after a failure). The threads log to the caller's tracing subscriber and span.
    pub fn run_concurrent<T, F>(&self, jobs: usize, job: F) -> Result<Vec<T>>
    where
        T: Send,
        F: Fn(usize) -> Result<T> + Sync,
    {
        let workers = self.config.concurrency.min(jobs);
        if workers <= 1 {
            return (0..jobs).map(&job).collect();
        }
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let span = tracing::Span::current();
        let mut slots: Vec<Option<Result<T>>> = (0..jobs).map(|_| None).collect();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        tracing::dispatcher::with_default(&dispatch, || {
                            let _entered = span.enter();
                            let mut done = Vec::new();
                            while !failed.load(Ordering::Relaxed) {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                if i >= jobs {
                                    break;
                                }
                                let result = job(i);
                                if result.is_err() {
                                    failed.store(true, Ordering::Relaxed);
                                }
                                done.push((i, result));
                            }
                            done
                        })
                    })
                })
                .collect();
            for handle in handles {
                match handle.join() {
                    Ok(done) => {
                        for (i, result) in done {
                            slots[i] = Some(result);
                        }
                    }
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        });
        if let Some(i) = slots.iter().position(|s| matches!(s, Some(Err(_)))) {
            if let Some(Some(Err(e))) = slots.get_mut(i).map(Option::take) {
                return Err(e);
            }
        }
        slots
            .into_iter()
            .map(|slot| match slot {
                Some(result) => result,
                None => Err(Error::Invalid("a job did not run".into())),
            })
            .collect()
    }

    /// One request: the JSON answer of a 2xx, or why there is none.
    fn attempt(&self, url: &str, payload: &[u8]) -> std::result::Result<Value, Failure> {
        let _slot = self.slots.acquire();
        let mut request = self
            .agent
            .post(url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json");
        if let Some(key) = &self.api_key {
            request = request.header("Authorization", key.bearer());
        }
        let response = request
            .send(payload)
            .map_err(|e| transport_failure(e, self.config.timeout))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response
            .into_body()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec();
        let code = status.as_u16();
        let reason = status.canonical_reason().unwrap_or("");
        if status.is_success() {
            let body = body.map_err(|e| transport_failure(e, self.config.timeout))?;
            return serde_json::from_slice(&body).map_err(|e| {
                Failure::new(
                    FailureKind::Invalid,
                    format!(
                        "the answer is not valid JSON ({e}); it starts with {}",
                        quote(&excerpt(&String::from_utf8_lossy(&body)))
                    ),
                )
            });
        }
        let server_says = match &body {
            Ok(body) if !body.is_empty() => format!(": {}", quote(&server_message(body))),
            _ => String::new(),
        };
        let kind = if code == 408 || code == 429 || status.is_server_error() {
            FailureKind::Transient
        } else {
            FailureKind::Fatal
        };
        let mut message = format!("server answered {code} {reason}{server_says}");
        if status.is_redirection() {
            if let Some(location) = location {
                message.push_str(&format!(
                    " (redirect to {}; set the base URL to the final address)",
                    quote(&strip_userinfo(&location))
                ));
            }
        }
        Err(Failure {
            kind,
            status: Some(code),
            message,
            retry_after,
        })
    }

    fn scrub(&self, text: &str) -> String {
        match &self.api_key {
            Some(key) => key.scrub(text),
            None => text.to_string(),
        }
    }
}

/// Classifies an error of the transport (no answer, or an answer cut short).
fn transport_failure(error: ureq::Error, timeout: Duration) -> Failure {
    use ureq::Error as E;
    match error {
        E::Timeout(_) => Failure::new(
            FailureKind::Transient,
            format!("no complete answer within {}", fmt_duration(timeout)),
        ),
        E::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => Failure::new(
            FailureKind::Transient,
            format!("no complete answer within {}", fmt_duration(timeout)),
        ),
        E::Io(e) => Failure::new(FailureKind::Transient, format!("connection error: {e}")),
        E::ConnectionFailed | E::HostNotFound | E::Protocol(_) | E::Decompress(..) => {
            Failure::new(FailureKind::Transient, format!("connection error: {error}"))
        }
        E::BodyExceedsLimit(limit) => Failure::new(
            FailureKind::Fatal,
            format!("the answer is larger than {limit} bytes"),
        ),
        other => Failure::new(FailureKind::Fatal, other.to_string()),
    }
}

/// Checks the scheme and strips a trailing `/` and `/v1`.
fn normalize_base_url(base_url: &str) -> Result<String> {
    let trimmed = base_url.trim();
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.trim_matches('/').is_empty() => {}
        _ => {
            return Err(Error::Invalid(format!(
                "base URL {} must start with http:// or https:// and name a host",
                quote(&strip_userinfo(trimmed))
            )));
        }
    }
    let mut root = trimmed.trim_end_matches('/');
    if let Some(stripped) = root.strip_suffix("/v1") {
        root = stripped.trim_end_matches('/');
    }
    Ok(root.to_string())
}

/// `url` without `user:password@` (which may hold a secret).
fn strip_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => format!("{}{}", &url[..scheme_end], &url[scheme_end + at + 1..]),
        None => url.to_string(),
    }
}

/// Whether a normalized base URL points at this machine.
fn is_loopback(root: &str) -> bool {
    let url = strip_userinfo(root);
    let after_scheme = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let authority = after_scheme.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The message in an error body: OpenAI's `{"error": {"message"}}`, TEI's `{"error"}`,
/// vLLM's `{"message"}`, FastAPI's `{"detail"}`, or else the body as text; one line, cut short.
fn server_message(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(json) => {
            let found = [
                json.pointer("/error/message"),
                json.get("error"),
                json.get("message"),
                json.get("detail"),
            ]
            .into_iter()
            .flatten()
            .find_map(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Null | Value::Object(_) => None,
                other => Some(other.to_string()),
            });
            found.unwrap_or_else(|| json.to_string())
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    excerpt(&text)
}

/// `text` on one line, cut to a few hundred characters.
fn excerpt(text: &str) -> String {
    foil_core::skip::excerpt(text, MAX_SERVER_MESSAGE_CHARS)
}

/// `text` in double quotes, escaped as JSON.
fn quote(text: &str) -> String {
    Value::String(text.to_string()).to_string()
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// A counting semaphore bounding the requests in flight.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

struct Slot<'a>(&'a Slots);

impl Slots {
    fn new(n: usize) -> Self {
        Self {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    }

    fn acquire(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_lose_a_trailing_slash_and_v1() {
        for url in [
            "http://h:8080",
            "http://h:8080/",
            "http://h:8080/v1",
            "http://h:8080/v1/",
        ] {
            assert_eq!(normalize_base_url(url).unwrap(), "http://h:8080");
        }
        assert_eq!(
            normalize_base_url("https://x.io/api/v1").unwrap(),
            "https://x.io/api"
        );
        assert!(normalize_base_url("localhost:8080").is_err());
        assert!(normalize_base_url("http://").is_err());
    }

    #[test]
    fn userinfo_is_stripped() {
        assert_eq!(
            strip_userinfo("https://u:p@h.io/v1/x?a=b@c"),
            "https://h.io/v1/x?a=b@c"
        );
        assert_eq!(strip_userinfo("http://h:1/x"), "http://h:1/x");
    }

    #[test]
    fn loopback_hosts_are_recognized() {
        assert!(is_loopback("http://127.0.0.1:8080"));
        assert!(is_loopback("http://localhost"));
        assert!(is_loopback("http://[::1]:80/x"));
        assert!(!is_loopback("https://api.openai.com"));
        assert!(!is_loopback("http://10.0.0.1:80"));
    }

    #[test]
    fn server_messages_are_found_and_cut() {
        assert_eq!(
            server_message(br#"{"error": {"message": "no such model", "type": "x"}}"#),
            "no such model"
        );
        assert_eq!(
            server_message(br#"{"error": "Input validation error", "error_type": "Validation"}"#),
            "Input validation error"
        );
        assert_eq!(server_message(b"{\"detail\": \"Not Found\"}"), "Not Found");
        assert_eq!(server_message(b"plain\n  text"), "plain text");
        let long = "x".repeat(1000);
        assert_eq!(
            server_message(long.as_bytes()).chars().count(),
            MAX_SERVER_MESSAGE_CHARS + 1
        );
    }

    #[test]
    fn api_key_debug_and_scrub_hide_it() {
        let key = ApiKey("sk-abc123".into());
        assert_eq!(format!("{key:?}"), "ApiKey([redacted])");
        assert_eq!(key.scrub("bad key sk-abc123!"), "bad key [redacted]!");
    }

    #[test]
    fn jobs_come_back_in_order_and_the_first_error_wins() {
        let mut config = ApiConfig::new("http://127.0.0.1:9", "m");
        config.api_key_env = "FOIL_OPENAI_UNIT_TEST_UNSET_KEY".into();
        config.concurrency = 3;
        let client = HttpClient::new(config).unwrap();
        let out = client.run_concurrent(10, |i| Ok(i * i)).unwrap();
        assert_eq!(out, (0..10).map(|i| i * i).collect::<Vec<_>>());
        let err = client
            .run_concurrent(10, |i| {
                if i >= 4 {
                    Err(Error::Invalid(format!("job {i}")))
                } else {
                    Ok(i)
                }
            })
            .unwrap_err();
        assert_eq!(err.to_string(), "job 4");
    }
}
