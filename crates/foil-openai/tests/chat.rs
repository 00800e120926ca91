//! OpenAiChat against a loopback `/v1/chat/completions` mock: every sampling parameter sent,
//! answers in request order, and under 429 (with Retry-After), 500, stalls, truncated JSON and
//! wrong schemas every request ends as an answer or as its own recorded failure.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foil_core::{ChatMessage, FinishReason, GenerationRequest, Generator, SamplingParams};
use foil_openai::{ApiConfig, OpenAiChat};
use serde_json::{json, Value};

/// What the mock answers.
#[derive(Clone, Debug)]
enum Reply {
    /// A correct completion: `echo: <last message>`.
    Ok,
    Status(u16, Vec<(String, String)>, String),
    Stall(Duration),
    Truncated,
    WrongSchema,
}

type Script = dyn Fn(&Value, usize) -> Reply + Send + Sync;

/// A one-request-per-connection HTTP/1.1 server on 127.0.0.1; `script(body, seen)` decides
/// each answer, `seen` counting earlier requests with the same messages.
struct Mock {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Mock {
    fn start(script: impl Fn(&Value, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let seen = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        let b = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (b, script, seen) = (b.clone(), script.clone(), seen.clone());
                std::thread::spawn(move || serve(stream, &b, &*script, &seen));
            }
        });
        Mock { addr, bodies }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

fn last_message(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string()
}

fn serve(
    stream: TcpStream,
    bodies: &Mutex<Vec<Value>>,
    script: &Script,
    seen: &Mutex<HashMap<String, usize>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    let mut length = 0usize;
    if reader.read_line(&mut line).is_err() {
        return;
    }
    loop {
        line.clear();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    bodies.lock().unwrap().push(body.clone());
    let count = {
        let mut seen = seen.lock().unwrap();
        let n = seen.entry(body["messages"].to_string()).or_insert(0);
        *n += 1;
        *n - 1
    };
    let good = json!({
        "id": "x", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("echo: {}", last_message(&body))}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    })
    .to_string();
    let (code, headers, text) = match script(&body, count) {
        Reply::Ok => (200, vec![], good),
        Reply::Status(code, headers, text) => (code, headers, text),
        Reply::Stall(wait) => {
            std::thread::sleep(wait);
            return;
        }
        Reply::Truncated => (200, vec![], good[..good.len() / 2].to_string()),
        Reply::WrongSchema => (
            200,
            vec![],
            r#"{"choices": [{"text": "legacy"}]}"#.to_string(),
        ),
    };
    let mut head = format!(
        "HTTP/1.1 {code} Mock\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        text.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut s = &stream;
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(text.as_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn config(mock: &Mock) -> ApiConfig {
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
    let mock = Mock::start(|_, _| Reply::Ok);
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
    let bodies = mock.bodies();
    assert_eq!(bodies.len(), 9);
    for b in &bodies {
        assert_eq!(b["model"], "mock-chat");
        assert_eq!(
            b["messages"][0],
            json!({"role": "system", "content": "sys"})
        );
        assert!((b["temperature"].as_f64().unwrap() - 0.3).abs() < 1e-6);
        assert!((b["top_p"].as_f64().unwrap() - 0.8).abs() < 1e-6);
        assert_eq!(b["max_tokens"], 12);
        assert_eq!(b["stop"], json!(["\n\n"]));
        let i: u64 = last_message(b)[1..].parse().unwrap();
        assert_eq!(b["seed"], i);
    }
    assert_eq!(
        chat.fingerprint(),
        format!("openai-chat:{}|model=\"mock-chat\"", mock.url())
    );
}

#[test]
fn every_request_ends_as_an_answer_or_its_own_failure() {
    let mock = Mock::start(|body, seen| {
        let i: usize = last_message(body)[1..].parse().unwrap();
        let transient = |r: Reply| if seen == 0 { r } else { Reply::Ok };
        match i {
            0 => transient(Reply::Status(
                429,
                vec![("Retry-After".into(), "0".into())],
                r#"{"error": {"message": "slow down"}}"#.into(),
            )),
            1 => transient(Reply::Status(500, vec![], "boom".into())),
            2 => transient(Reply::Stall(Duration::from_millis(1500))),
            3 => transient(Reply::Truncated),
            4 => transient(Reply::WrongSchema),
            5 => Reply::Status(500, vec![], "always down".into()),
            6 => Reply::Truncated,
            7 => Reply::WrongSchema,
            8 => Reply::Stall(Duration::from_millis(1500)),
            9 => Reply::Status(
                400,
                vec![],
                r#"{"error": {"message": "bad prompt"}}"#.into(),
            ),
            _ => Reply::Ok,
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
        mock.bodies()
            .iter()
            .filter(|b| last_message(b) == format!("r{i}"))
            .count()
    };
    assert_eq!(sent(9), 1);
    assert_eq!(sent(6), 3);
    assert_eq!(sent(5), 4, "1 + max_retries");
    assert_eq!(sent(0), 2);
}

#[test]
fn retry_after_is_honoured() {
    let mock = Mock::start(|_, seen| {
        if seen == 0 {
            Reply::Status(429, vec![("Retry-After".into(), "1".into())], "{}".into())
        } else {
            Reply::Ok
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
