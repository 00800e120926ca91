//! OpenAiEncoder against the loopback mock server: order, prefixes, dimensions, batching,
//! retries on every kind of transient fault, and clear errors when retries run out.

use std::time::{Duration, Instant};

use foil_core::{Encoder, TextKind};
use foil_openai::{EmbeddingsConfig, OpenAiEncoder};
use foil_test_support::{
    embeddings, embeddings_body, vector, MockServer, Reply, Request, NATIVE_DIM,
};

/// A server that always answers with the right vectors.
fn healthy() -> MockServer {
    MockServer::start(|request, _| embeddings(request))
}

/// 200 with `{"object": "list"}`: no `data`.
fn missing_data() -> Reply {
    Reply::ok(r#"{"object": "list", "model": "mock"}"#)
}

/// 200 with one vector fewer than inputs.
fn wrong_count(request: &Request) -> Reply {
    Reply::ok(embeddings_body(request, 1, 0))
}

/// 200 with vectors one component longer than asked for.
fn wrong_dim(request: &Request) -> Reply {
    Reply::ok(embeddings_body(request, 0, 1))
}

/// An answer made from the request, for table-driven tests.
type Answer = fn(&Request) -> Reply;

/// Asserts that `actual` is close to `expected`, component by component.
fn assert_close(actual: &[f32], expected: &[f32], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (k, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= 1e-6, "{what}[{k}]: {a} != {e}");
    }
}

/// A config for `server` with fast backoff and no API key.
fn config(server: &MockServer) -> EmbeddingsConfig {
    let mut config = EmbeddingsConfig::new(server.url(), "mock-model");
    config.api.api_key_env = "FOIL_OPENAI_TEST_KEY_NEVER_SET".into();
    config.api.timeout = Duration::from_secs(5);
    config.api.backoff_base = Duration::from_millis(10);
    config.api.backoff_cap = Duration::from_millis(50);
    config
}

fn texts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("text {i}")).collect()
}

fn refs(texts: &[String]) -> Vec<&str> {
    texts.iter().map(String::as_str).collect()
}

fn assert_rows(embeddings: &foil_core::Embeddings, texts: &[String], prefix: &str) {
    assert_eq!(embeddings.len(), texts.len());
    for (i, text) in texts.iter().enumerate() {
        let expected = vector(&format!("{prefix}{text}"), embeddings.dim);
        assert_close(embeddings.row(i), &expected, &format!("row {i} ({text:?})"));
    }
}

#[test]
fn vectors_come_back_in_input_order_with_prefixes() {
    let server = healthy();
    let mut config = config(&server);
    config.batch_size = 3;
    config.query_prefix = "query: ".into();
    config.passage_prefix = "passage: ".into();
    let encoder = OpenAiEncoder::new(config).unwrap();
    assert_eq!(encoder.dim(), NATIVE_DIM, "learned by the probe");
    assert_eq!(encoder.name(), "openai:mock-model");

    let texts = texts(10);
    let queries = encoder.encode(&refs(&texts), TextKind::Query).unwrap();
    assert_eq!(queries.dim, NATIVE_DIM);
    assert_rows(&queries, &texts, "query: ");
    let passages = encoder.encode(&refs(&texts), TextKind::Passage).unwrap();
    assert_rows(&passages, &texts, "passage: ");

    let requests = server.requests();
    assert_eq!(
        requests.len(),
        1 + 4 + 4,
        "a probe, then 4 batches of at most 3, twice"
    );
    assert_eq!(requests[0].inputs(), ["passage: foil"]);
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/v1/embeddings");
        assert_eq!(request.body["model"], "mock-model");
        assert!(request.body.get("dimensions").is_none());
        assert!(request
            .header("content-type")
            .unwrap()
            .starts_with("application/json"));
        assert_eq!(request.header("authorization"), None, "no key, no header");
        assert!(request.inputs().len() <= 3);
    }
    let mut sent: Vec<String> = requests[1..].iter().flat_map(|r| r.inputs()).collect();
    sent.sort();
    let mut expected: Vec<String> = ["query: ", "passage: "]
        .iter()
        .flat_map(|p| texts.iter().map(move |t| format!("{p}{t}")))
        .collect();
    expected.sort();
    assert_eq!(sent, expected, "every text sent exactly once");
}

#[test]
fn dimensions_are_requested_and_no_probe_is_sent() {
    let server = healthy();
    let mut config = config(&server);
    config.dimensions = Some(5);
    let encoder = OpenAiEncoder::new(config).unwrap();
    assert!(server.requests().is_empty());
    assert_eq!(encoder.dim(), 5);
    let texts = texts(3);
    let out = encoder.encode(&refs(&texts), TextKind::Passage).unwrap();
    assert_eq!(out.dim, 5);
    assert_rows(&out, &texts, "");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body["dimensions"], 5);
}

#[test]
fn base_url_may_end_in_v1() {
    let server = healthy();
    for suffix in ["/", "/v1", "/v1/"] {
        let mut config = config(&server);
        config.api.base_url = format!("{}{suffix}", server.url());
        let encoder = OpenAiEncoder::new(config).unwrap();
        assert_eq!(encoder.client().base_url(), server.url());
        encoder.encode(&["x"], TextKind::Query).unwrap();
    }
    assert!(server.requests().iter().all(|r| r.path == "/v1/embeddings"));
}

#[test]
fn normalization_gives_unit_vectors() {
    let server = healthy();
    let mut config = config(&server);
    config.normalize = true;
    config.dimensions = Some(NATIVE_DIM);
    let encoder = OpenAiEncoder::new(config).unwrap();
    let texts = texts(4);
    let out = encoder.encode(&refs(&texts), TextKind::Query).unwrap();
    for (i, row) in out.rows().enumerate() {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "row {i} has norm {norm}");
        let raw = vector(&texts[i], NATIVE_DIM);
        let raw_norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
        let expected: Vec<f32> = raw.iter().map(|x| x / raw_norm).collect();
        assert_close(row, &expected, &format!("row {i}"));
    }
}

#[test]
fn empty_input_sends_nothing() {
    let server = healthy();
    let mut config = config(&server);
    config.dimensions = Some(4);
    let encoder = OpenAiEncoder::new(config).unwrap();
    let out = encoder.encode(&[], TextKind::Query).unwrap();
    assert!(out.is_empty());
    assert_eq!(out.dim, 4);
    assert!(server.requests().is_empty());
}

#[test]
fn fingerprint_names_everything_that_changes_vectors() {
    let server = healthy();
    let mut config = config(&server);
    config.api.base_url = format!("{}/v1/", server.url());
    config.dimensions = Some(256);
    config.query_prefix = "query: ".into();
    config.passage_prefix = "passage: ".into();
    let a = OpenAiEncoder::new(config.clone()).unwrap().fingerprint();
    assert_eq!(
        a,
        format!(
            "openai:{}|model=\"mock-model\"|dimensions=256|query_prefix=\"query: \"|passage_prefix=\"passage: \"|normalize=false",
            server.url()
        )
    );
    let mut changed = Vec::new();
    let mut c = config.clone();
    c.normalize = true;
    changed.push(c);
    let mut c = config.clone();
    c.query_prefix = "q: ".into();
    changed.push(c);
    let mut c = config.clone();
    c.dimensions = Some(128);
    changed.push(c);
    let mut c = config.clone();
    c.api.model = "other".into();
    changed.push(c);
    for c in changed {
        assert_ne!(OpenAiEncoder::new(c).unwrap().fingerprint(), a);
    }
    let mut same = config.clone();
    same.batch_size = 7;
    same.api.concurrency = 1;
    same.api.max_retries = 0;
    assert_eq!(
        OpenAiEncoder::new(same).unwrap().fingerprint(),
        a,
        "transport settings do not change vectors"
    );
    // Without `dimensions` the size learned from the server goes in.
    let mut native = config;
    native.dimensions = None;
    assert!(OpenAiEncoder::new(native)
        .unwrap()
        .fingerprint()
        .contains("|dimensions=native(8)|"));
}

#[test]
fn retry_after_is_honoured() {
    let server = MockServer::start(|request, seen| match seen {
        0 => Reply::status(429, r#"{"error": {"message": "rate limited"}}"#)
            .header("Retry-After", "1"),
        _ => embeddings(request),
    });
    let mut config = config(&server);
    config.dimensions = Some(NATIVE_DIM);
    let encoder = OpenAiEncoder::new(config).unwrap();
    let texts = texts(5);
    let started = Instant::now();
    let out = encoder.encode(&refs(&texts), TextKind::Query).unwrap();
    let elapsed = started.elapsed();
    assert_rows(&out, &texts, "");
    assert_eq!(server.requests().len(), 2);
    assert!(
        elapsed >= Duration::from_secs(1),
        "waited only {elapsed:?}, backoff alone is ≤ 10 ms"
    );
    assert!(elapsed < Duration::from_secs(4), "waited {elapsed:?}");
}

#[test]
fn transient_faults_are_retried_until_every_vector_is_right() {
    // 9 batches of 2; each batch (named by its first text) meets its own faults first.
    let server = MockServer::start(|request, seen| {
        let inputs = request.inputs();
        let batch: usize = inputs[0].trim_start_matches("text ").parse().unwrap_or(0) / 2;
        let faults: Vec<Reply> = match batch {
            0 => vec![
                Reply::status(500, "boom"),
                Reply::status(502, "<html>bad gateway</html>"),
            ],
            1 => vec![Reply::stall(Duration::from_secs(1))],
            2 => vec![embeddings(request).truncated()],
            3 => vec![missing_data()],
            4 => vec![wrong_count(request)],
            5 => vec![embeddings(request).cut_short()],
            6 => vec![Reply::status(503, "").header("Retry-After", "0")],
            7 => vec![
                Reply::status(429, r#"{"error": {"message": "slow down"}}"#),
                wrong_dim(request),
            ],
            _ => vec![],
        };
        faults
            .get(seen)
            .cloned()
            .unwrap_or_else(|| embeddings(request))
    });
    let mut config = config(&server);
    config.dimensions = Some(NATIVE_DIM);
    config.batch_size = 2;
    config.api.concurrency = 4;
    config.api.timeout = Duration::from_millis(300);
    let encoder = OpenAiEncoder::new(config).unwrap();
    let texts = texts(18);
    let started = Instant::now();
    let out = encoder.encode(&refs(&texts), TextKind::Passage).unwrap();
    assert_rows(&out, &texts, "");
    let requests = server.requests();
    let per_batch = |b: usize| {
        requests
            .iter()
            .filter(|r| r.inputs().first() == Some(&format!("text {}", 2 * b)))
            .count()
    };
    let expected_at_least = [3, 2, 2, 2, 2, 2, 2, 3, 1];
    for (b, &n) in expected_at_least.iter().enumerate() {
        assert!(
            per_batch(b) >= n,
            "batch {b}: {} requests, expected ≥ {n}",
            per_batch(b)
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn persistent_server_errors_exhaust_the_retries() {
    let server =
        MockServer::start(|_, _| Reply::status(503, r#"{"error": {"message": "overloaded"}}"#));
    let mut config = config(&server);
    config.dimensions = Some(4);
    config.api.max_retries = 3;
    let encoder = OpenAiEncoder::new(config).unwrap();
    let err = encoder
        .encode(&["a", "b"], TextKind::Query)
        .unwrap_err()
        .to_string();
    assert_eq!(server.requests().len(), 4, "1 try + 3 retries");
    assert!(
        err.starts_with("embeddings batch 1 of 1 (texts 0..2): POST http://127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("gave up after 4 attempts"), "{err}");
    assert!(
        err.contains("503 Service Unavailable: \"overloaded\""),
        "{err}"
    );
}

#[test]
fn client_errors_fail_at_once_with_the_servers_message_cut_short() {
    let message = format!("model \\\"nope\\\" does not exist {}", "x".repeat(2000));
    let server = MockServer::start(move |_, _| {
        Reply::status(
            404,
            format!(r#"{{"error": {{"message": "{message}", "type": "invalid_request_error"}}}}"#),
        )
    });
    let mut config = config(&server);
    config.dimensions = Some(4);
    let encoder = OpenAiEncoder::new(config).unwrap();
    let started = Instant::now();
    let err = encoder
        .encode(&["a"], TextKind::Query)
        .unwrap_err()
        .to_string();
    assert!(started.elapsed() < Duration::from_secs(1));
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        ["/v1/embeddings", "/embeddings"],
        "a 404 is not retried; the route is tried once at the root"
    );
    assert!(
        err.contains(
            "failed: server answered 404 Not Found: \"model \\\"nope\\\" does not exist xxx"
        ),
        "{err}"
    );
    assert!(
        err.contains("answered no better") && err.contains("--url-prefix /v1"),
        "the error says what was tried and how to point foil elsewhere: {err}"
    );
    assert!(err.len() < 900, "{} bytes", err.len());
}

#[test]
fn a_server_with_its_routes_at_the_root_is_found_after_one_404() {
    // infinity's default: /embeddings, not /v1/embeddings.
    let server = MockServer::start(|request, _| {
        if request.path == "/embeddings" {
            embeddings(request)
        } else {
            Reply::status(404, r#"{"detail": "Not Found"}"#)
        }
    });
    let encoder = OpenAiEncoder::new(config(&server)).unwrap();
    let texts = texts(3);
    let got = encoder.encode(&refs(&texts), TextKind::Passage).unwrap();
    assert_rows(&got, &texts, "");
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    // The probe: 404 under /v1, then the root; every later request goes to the root at once.
    assert_eq!(paths, ["/v1/embeddings", "/embeddings", "/embeddings"]);
}

#[test]
fn persistent_schema_errors_fail_after_a_few_retries() {
    let server = MockServer::start(|_, _| missing_data());
    let mut config = config(&server);
    config.dimensions = Some(4);
    config.batch_size = 2;
    config.api.concurrency = 1;
    let encoder = OpenAiEncoder::new(config).unwrap();
    let err = encoder
        .encode(&["a", "b", "c"], TextKind::Query)
        .unwrap_err()
        .to_string();
    assert_eq!(
        server.requests().len(),
        3,
        "1 try + max_invalid_retries (2), first batch only"
    );
    assert!(
        err.starts_with("embeddings batch 1 of 2 (texts 0..2): "),
        "{err}"
    );
    assert!(err.contains("gave up after 3 attempts; invalid response: the answer has no \"data\" array (keys: \"object\", \"model\")"), "{err}");
}

#[test]
fn wrong_counts_and_sizes_are_clear_errors() {
    let cases: [(Answer, &str); 3] = [
        (wrong_count, "the answer holds 2 embeddings for 3 inputs"),
        (wrong_dim, "data[0].embedding has 5 dimensions, expected 4"),
        (
            |r| embeddings(r).truncated(),
            "the answer is not valid JSON (EOF while parsing",
        ),
    ];
    for (reply, expected) in cases {
        let server = MockServer::start(move |request, _| reply(request));
        let mut config = config(&server);
        config.dimensions = Some(4);
        config.api.max_invalid_retries = 0;
        let encoder = OpenAiEncoder::new(config).unwrap();
        let err = encoder
            .encode(&["a", "b", "c"], TextKind::Query)
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err}");
        assert!(err.contains("batch 1 of 1"), "{err}");
        assert_eq!(server.requests().len(), 1);
    }
}

#[test]
fn a_probe_that_fails_fails_construction() {
    let server =
        MockServer::start(|_, _| Reply::status(401, r#"{"error": {"message": "no key"}}"#));
    let err = OpenAiEncoder::new(config(&server)).unwrap_err().to_string();
    assert!(err.starts_with("embeddings probe: POST "), "{err}");
    assert!(err.contains("401 Unauthorized: \"no key\""), "{err}");
}

#[test]
fn connection_refused_is_retried_then_reported() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut config = EmbeddingsConfig::new(format!("http://127.0.0.1:{port}"), "m");
    config.api.api_key_env = "FOIL_OPENAI_TEST_KEY_NEVER_SET".into();
    config.api.backoff_base = Duration::from_millis(10);
    config.api.max_retries = 2;
    config.dimensions = Some(4);
    let encoder = OpenAiEncoder::new(config).unwrap();
    let err = encoder
        .encode(&["a"], TextKind::Query)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gave up after 3 attempts; last error: connection error"),
        "{err}"
    );
}

/// A change to a config, for table-driven tests.
type Change = fn(&mut EmbeddingsConfig);

#[test]
fn bad_configs_are_refused() {
    let cases: [(Change, &str); 5] = [
        (
            |c| c.api.base_url = "localhost:8080".into(),
            "base URL \"localhost:8080\" must start with http:// or https:// and name a host",
        ),
        (|c| c.api.model = " ".into(), "the model name is empty"),
        (|c| c.batch_size = 0, "the batch size must be at least 1"),
        (|c| c.api.concurrency = 0, "concurrency must be at least 1"),
        (|c| c.dimensions = Some(0), "dimensions must be at least 1"),
    ];
    for (change, expected) in cases {
        let mut config = EmbeddingsConfig::new("http://127.0.0.1:9", "m");
        config.dimensions = Some(4);
        change(&mut config);
        let err = OpenAiEncoder::new(config).unwrap_err().to_string();
        assert_eq!(err, expected);
    }
}
