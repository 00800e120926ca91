//! OpenAiChat against a loopback `/v1/chat/completions` mock: every sampling parameter sent,
//! answers in request order, and under 429 (with Retry-After), 500, stalls, truncated JSON and
//! wrong schemas every request ends as an answer or as its own recorded failure.

use std::time::{Duration, Instant};

use foil_core::{ChatMessage, FinishReason, GenerationRequest, Generator, SamplingParams};
use foil_openai::{ApiConfig, OpenAiChat};
use foil_test_support::{chat_completion, MockServer, Reply, Request};
use serde_json::json;

/// A correct completion: `echo: <last message>`.
fn echo(request: &Request) -> Reply {
    chat_completion(&format!("echo: {}", request.last_message()), 5, 2)
}

/// 200 in the legacy completions schema: no `message`.
fn wrong_schema() -> Reply {
    Reply::ok(r#"{"choices": [{"text": "legacy"}]}"#)
}

fn config(mock: &MockServer) -> ApiConfig {
    let mut c = ApiConfig::new(mock.url(), "mock-chat");
    c.api_key_env = "FOIL_CHAT_TEST_KEY_NEVER_SET".into();
    c.timeout = Duration::from_secs(1);
    c.backoff_base = Duration::from_millis(5);
    c.backoff_cap = Duration::from_millis(20);
    c.max_retries = 3;
    c.concurrency = 4;
    c
}

fn request(text: &str, seed: u64) -> GenerationRequest {
    GenerationRequest {
        messages: vec![ChatMessage::system("sys"), ChatMessage::user(text)],
        params: SamplingParams {
            temperature: 0.3,
            top_p: 0.8,
            max_tokens: 12,
            stop: vec!["\n\n".into()],
            seed,
            ..Default::default()
        },
    }
}

#[test]
fn answers_come_back_in_order_with_every_parameter_sent() {
    let mock = MockServer::start(|request, _| echo(request));
    let chat = OpenAiChat::new(config(&mock)).unwrap();
    let requests: Vec<_> = (0..9).map(|i| request(&format!("r{i}"), i)).collect();
    let out = chat.generate(&requests);
    assert_eq!(out.len(), 9);
    for (i, r) in out.iter().enumerate() {
        let g = r.as_ref().unwrap();
        assert_eq!(g.text, format!("echo: r{i}"));
        assert_eq!(g.finish, FinishReason::Stop);
        assert_eq!((g.prompt_tokens, g.completion_tokens), (5, 2));
    }
    let requests = mock.requests();
    assert_eq!(requests.len(), 9);
    for r in &requests {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/v1/chat/completions")
        );
        let b = &r.body;
        assert_eq!(b["model"], "mock-chat");
        assert_eq!(
            b["messages"][0],
            json!({"role": "system", "content": "sys"})
        );
        assert!((b["temperature"].as_f64().unwrap() - 0.3).abs() < 1e-6);
        assert!((b["top_p"].as_f64().unwrap() - 0.8).abs() < 1e-6);
        assert_eq!(b["max_tokens"], 12);
        assert_eq!(b["stop"], json!(["\n\n"]));
        let i: u64 = r.last_message()[1..].parse().unwrap();
        assert_eq!(b["seed"], i);
    }
    assert_eq!(
        chat.fingerprint(),
        format!("openai-chat:{}|model=\"mock-chat\"", mock.url())
    );
}

#[test]
fn every_request_ends_as_an_answer_or_its_own_failure() {
    let mock = MockServer::start(|request, seen| {
        let i: usize = request.last_message()[1..].parse().unwrap();
        let transient = |r: Reply| if seen == 0 { r } else { echo(request) };
        match i {
            0 => transient(
                Reply::status(429, r#"{"error": {"message": "slow down"}}"#)
                    .header("Retry-After", "0"),
            ),
            1 => transient(Reply::status(500, "boom")),
            2 => transient(Reply::stall(Duration::from_millis(1500))),
            3 => transient(echo(request).truncated()),
            4 => transient(wrong_schema()),
            5 => Reply::status(500, "always down"),
            6 => echo(request).truncated(),
            7 => wrong_schema(),
            8 => Reply::stall(Duration::from_millis(1500)),
            9 => Reply::status(400, r#"{"error": {"message": "bad prompt"}}"#),
            _ => echo(request),
        }
    });
    let chat = OpenAiChat::new(config(&mock)).unwrap();
    let requests: Vec<_> = (0..12).map(|i| request(&format!("r{i}"), 0)).collect();
    let out = chat.generate(&requests);
    assert_eq!(out.len(), 12);
    let answers = out.iter().filter(|r| r.is_ok()).count();
    let failures: Vec<(usize, String)> = out
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e.reason.clone())))
        .collect();
    assert_eq!(answers + failures.len(), 12, "nothing lost");
    assert_eq!(
        failures,
        [
            (5, "http_500".to_string()),
            (6, "bad_response".to_string()),
            (7, "bad_response".to_string()),
            (8, "timeout".to_string()),
            (9, "http_400".to_string()),
        ]
    );
    for (i, r) in out.iter().enumerate() {
        if let Ok(g) = r {
            assert_eq!(g.text, format!("echo: r{i}"), "request {i}");
        }
    }
    let e = out[9].as_ref().unwrap_err();
    assert!(e.message.contains("bad prompt"), "{}", e.message);
    // 400 is not retried; always-bad answers are retried max_invalid_retries (2) times.
    let sent = |i: usize| {
        mock.requests()
            .iter()
            .filter(|r| r.last_message() == format!("r{i}"))
            .count()
    };
    assert_eq!(sent(9), 1);
    assert_eq!(sent(6), 3);
    assert_eq!(sent(5), 4, "1 + max_retries");
    assert_eq!(sent(0), 2);
}

#[test]
fn retry_after_is_honoured() {
    let mock = MockServer::start(|request, seen| {
        if seen == 0 {
            Reply::status(429, "{}").header("Retry-After", "1")
        } else {
            echo(request)
        }
    });
    let chat = OpenAiChat::new(config(&mock)).unwrap();
    let started = Instant::now();
    let out = chat.generate(&[request("r0", 1)]);
    let elapsed = started.elapsed();
    assert_eq!(out[0].as_ref().unwrap().text, "echo: r0");
    assert!(elapsed >= Duration::from_secs(1), "waited only {elapsed:?}");
    assert!(elapsed < Duration::from_secs(4), "waited {elapsed:?}");
}
