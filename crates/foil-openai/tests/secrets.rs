//! The API key goes to the server as `Authorization: Bearer …` and nowhere else: not in log
//! lines (ours, nor ureq's as forwarded through `log`), errors, `Debug` output or the
//! fingerprint, even when the server echoes it back.
//!
//! This file installs a global tracing subscriber, so it is its own test binary.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foil_core::{Encoder, TextKind};
use foil_openai::{ApiKey, EmbeddingsConfig, HttpClient, OpenAiEncoder};
use foil_test_support::{embeddings, MockServer, Reply};

/// A `Write` into a shared buffer, for the subscriber.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[test]
fn the_key_reaches_the_server_and_nothing_else() {
    let logs = Capture::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the only subscriber of this test binary");

    let var = format!("FOIL_OPENAI_TEST_KEY_{}", std::process::id());
    let secret = format!("sk-foil-{}-8b1f0c9e7d", std::process::id());
    std::env::set_var(&var, format!("  {secret}\n"));

    // The server echoes the key back in every error it sends.
    let echo = secret.clone();
    let server = MockServer::start(move |request, seen| {
        let auth = request.header("authorization").unwrap_or("").to_string();
        match seen {
            0 => Reply::status(500, format!("internal error handling {auth}")),
            1 => Reply::status(
                429,
                format!(r#"{{"error": {{"message": "rate limit for key {echo}"}}}}"#),
            )
            .header("Retry-After", "0"),
            2 => embeddings(request).truncated(),
            _ => Reply::status(
                401,
                format!(r#"{{"error": {{"message": "Incorrect API key provided: {echo}."}}}}"#),
            ),
        }
    });
    let mut config = EmbeddingsConfig::new(server.url(), "mock-model");
    config.api.api_key_env = var.clone();
    config.api.backoff_base = Duration::from_millis(10);
    config.dimensions = Some(4);
    let encoder = OpenAiEncoder::new(config.clone()).unwrap();
    assert!(encoder.client().has_api_key());

    let err = encoder.encode(&["a", "b"], TextKind::Query).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("401 Unauthorized: \"Incorrect API key provided: [redacted].\""),
        "{message}"
    );

    let requests = server.requests();
    assert_eq!(
        requests.len(),
        4,
        "500, 429, truncated JSON, then 401 which is not retried"
    );
    for request in &requests {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {secret}").as_str())
        );
    }

    let logs = logs.text();
    assert!(
        logs.contains("request failed, retrying"),
        "nothing captured: {logs}"
    );
    assert!(
        logs.contains("status=500") && logs.contains("status=429"),
        "{logs}"
    );
    assert!(
        logs.contains("attempt=1") && logs.contains("attempt=3"),
        "{logs}"
    );
    assert!(
        logs.contains("internal error handling Bearer [redacted]"),
        "{logs}"
    );

    let debug_outputs = [
        format!("{err:?}"),
        format!("{encoder:?}"),
        format!("{:?}", encoder.client()),
        format!("{config:?}"),
        format!("{:?}", ApiKey::from_env(&var).unwrap()),
        format!("{:?}", HttpClient::new(config.api.clone()).unwrap()),
    ];
    assert!(
        debug_outputs[1].contains("ApiKey([redacted])"),
        "{}",
        debug_outputs[1]
    );
    let places = [
        ("an error message", message.clone()),
        ("the fingerprint", encoder.fingerprint()),
        ("the log", logs.clone()),
    ]
    .into_iter()
    .chain(debug_outputs.into_iter().map(|d| ("a Debug output", d)));
    for (place, text) in places {
        assert!(!text.contains(&secret), "the key is in {place}: {text}");
        assert!(
            !text.contains("8b1f0c9e7d"),
            "part of the key is in {place}: {text}"
        );
    }
}
