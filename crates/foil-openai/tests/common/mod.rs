//! A loopback mock of an OpenAI-compatible `/v1/embeddings` server for the tests: it listens
//! on 127.0.0.1 (port chosen by the OS), speaks just enough HTTP/1.1 (one request per
//! connection, `Connection: close`), records every request, and answers as a script says:
//! correct vectors derived from each input text, or an injected fault.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

/// The size of the mock's vectors when a request does not ask for `dimensions`.
pub const NATIVE_DIM: usize = 8;

/// A request as the mock received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `input` texts.
    pub fn inputs(&self) -> Vec<String> {
        self.body["input"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// What the mock answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The right vectors, `data` in reverse order with their `index`.
    Embed,
    /// Any status, extra headers and body.
    Status {
        code: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Says nothing for this long, then closes the connection.
    Stall(Duration),
    /// 200 with the first half of the right JSON (and a matching Content-Length).
    TruncatedJson,
    /// 200 announcing the right body's length but closing after half of it.
    CutShort,
    /// 200 with `{"object": "list"}`: no `data`.
    MissingData,
    /// 200 with one vector fewer than inputs.
    WrongCount,
    /// 200 with vectors of a different size.
    WrongDim,
}

impl Reply {
    pub fn status(code: u16, body: &str) -> Self {
        Reply::Status {
            code,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }
}

/// The script: given a request and how many earlier requests had the same `input`, the reply.
pub type Script = dyn Fn(&Request, usize) -> Reply + Send + Sync;

pub struct MockServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MockServer {
    /// A server that always answers with the right vectors.
    pub fn healthy() -> Self {
        Self::start(|_, _| Reply::Embed)
    }

    /// A server answering as `script` says.
    pub fn start(script: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let seen = Arc::new(Mutex::new(HashMap::<Vec<String>, usize>::new()));
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (requests, script, seen) = (requests.clone(), script.clone(), seen.clone());
                    std::thread::spawn(move || serve(stream, &requests, &*script, &seen));
                }
            })
        };
        Self {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    stream: TcpStream,
    requests: &Mutex<Vec<Request>>,
    script: &Script,
    seen: &Mutex<HashMap<Vec<String>, usize>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Some(request) = read_request(&stream) else {
        return;
    };
    requests.lock().unwrap().push(request.clone());
    let count = {
        let mut seen = seen.lock().unwrap();
        let n = seen.entry(request.inputs()).or_insert(0);
        *n += 1;
        *n - 1
    };
    let reply = script(&request, count);
    let ok = |body: &str| write_response(&stream, 200, &[], body.as_bytes(), None);
    match reply {
        Reply::Embed => ok(&embeddings_body(&request, 0, 0).to_string()),
        Reply::Status {
            code,
            headers,
            body,
        } => write_response(&stream, code, &headers, body.as_bytes(), None),
        Reply::Stall(wait) => std::thread::sleep(wait),
        Reply::TruncatedJson => {
            let body = embeddings_body(&request, 0, 0).to_string();
            ok(&body[..body.len() / 2])
        }
        Reply::CutShort => {
            let body = embeddings_body(&request, 0, 0).to_string();
            write_response(
                &stream,
                200,
                &[],
                &body.as_bytes()[..body.len() / 2],
                Some(body.len()),
            )
        }
        Reply::MissingData => ok(r#"{"object": "list", "model": "mock"}"#),
        Reply::WrongCount => ok(&embeddings_body(&request, 1, 0).to_string()),
        Reply::WrongDim => ok(&embeddings_body(&request, 0, 1).to_string()),
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

fn write_response(
    mut stream: &TcpStream,
    code: u16,
    headers: &[(String, String)],
    body: &[u8],
    announced_length: Option<usize>,
) {
    let mut head = format!(
        "HTTP/1.1 {code} Mock\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        announced_length.unwrap_or(body.len())
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}

/// The right answer to `request`, less `drop` vectors and with `extra_dims` more components.
fn embeddings_body(request: &Request, drop: usize, extra_dims: usize) -> Value {
    let dim = request.body["dimensions"]
        .as_u64()
        .map_or(NATIVE_DIM, |d| d as usize)
        + extra_dims;
    let inputs = request.inputs();
    let keep = inputs.len().saturating_sub(drop);
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .take(keep)
        .rev()
        .map(|(i, text)| json!({"object": "embedding", "index": i, "embedding": vector(text, dim)}))
        .collect();
    json!({"object": "list", "model": request.body["model"], "data": data})
}

/// The vector the mock gives `text`: components in [-1, 1) from a hash of the text.
pub fn vector(text: &str, dim: usize) -> Vec<f32> {
    (0..dim)
        .map(|i| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            for b in text.bytes() {
                h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
            h ^= h >> 29;
            ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Asserts that `actual` is close to `expected`, component by component.
pub fn assert_close(actual: &[f32], expected: &[f32], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (k, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= 1e-6, "{what}[{k}]: {a} != {e}");
    }
}
