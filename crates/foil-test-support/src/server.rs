//! The mock server: it listens on 127.0.0.1 (port chosen by the OS), speaks just enough
//! HTTP/1.1 (one request per connection, `Connection: close`), records every request, and
//! answers each one as a script says: a status, headers and body, sent at once, late, cut
//! short, or not at all.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

/// A request as the mock received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names lowercased, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The JSON body; `Null` when there is none or it is not JSON.
    pub body: Value,
}

impl Request {
    /// The value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `input` texts of an embeddings request.
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

    /// The content of a chat request's last message; empty when there is none.
    pub fn last_message(&self) -> &str {
        self.body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or("")
    }

    /// A chat request's `seed`; 0 when there is none.
    pub fn seed(&self) -> u64 {
        self.body["seed"].as_u64().unwrap_or(0)
    }
}

/// What the mock answers to one request: built by [`Reply::ok`], [`Reply::status`] or
/// [`Reply::stall`], then changed by the other methods.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The `Content-Length` sent when it is not the body's length.
    announced_length: Option<usize>,
    /// How long the mock waits before answering (or before closing, when `silent`).
    delay: Duration,
    /// Closes the connection without a word.
    silent: bool,
}

impl Reply {
    /// 200 with `body` (JSON text, or a `serde_json::Value`).
    pub fn ok(body: impl ToString) -> Self {
        Self::status(200, body)
    }

    /// Any status with `body`.
    pub fn status(code: u16, body: impl ToString) -> Self {
        Reply {
            status: code,
            headers: Vec::new(),
            body: body.to_string().into_bytes(),
            announced_length: None,
            delay: Duration::ZERO,
            silent: false,
        }
    }

    /// Says nothing for `wait`, then closes the connection.
    pub fn stall(wait: Duration) -> Self {
        Reply {
            delay: wait,
            silent: true,
            ..Self::status(200, "")
        }
    }

    /// Adds a header, such as `Retry-After`.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sends only the first half of the body, with a matching `Content-Length`.
    pub fn truncated(mut self) -> Self {
        self.body.truncate(self.body.len() / 2);
        self
    }

    /// Announces the whole body's length but closes the connection after half of it.
    pub fn cut_short(mut self) -> Self {
        self.announced_length = Some(self.body.len());
        self.body.truncate(self.body.len() / 2);
        self
    }

    /// Waits `delay` before answering.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// The script: given a request and how many earlier requests had the same body (0 for the
/// first try, 1 for its first retry, ...), the reply.
type Script = dyn Fn(&Request, usize) -> Reply + Send + Sync;

/// A loopback OpenAI-compatible server; stops when dropped.
pub struct MockServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MockServer {
    /// A server answering as `script(request, seen)` says, `seen` counting the earlier
    /// requests with the same body: the tries before this one of the same request.
    pub fn start(script: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let seen = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
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
    seen: &Mutex<HashMap<String, usize>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Some(request) = read_request(&stream) else {
        return;
    };
    requests.lock().unwrap().push(request.clone());
    let count = {
        let mut seen = seen.lock().unwrap();
        let n = seen.entry(request.body.to_string()).or_insert(0);
        *n += 1;
        *n - 1
    };
    let reply = script(&request, count);
    std::thread::sleep(reply.delay);
    if !reply.silent {
        write_response(&stream, &reply);
    }
    let _ = stream.shutdown(Shutdown::Both);
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

fn write_response(mut stream: &TcpStream, reply: &Reply) {
    let mut head = format!(
        "HTTP/1.1 {} Mock\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.announced_length.unwrap_or(reply.body.len())
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&reply.body);
    let _ = stream.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends one POST with `body` to `server` and returns everything it answered.
    fn post(server: &MockServer, body: &str) -> String {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        write!(
            stream,
            "POST /v1/x HTTP/1.1\r\nAuthorization: Bearer k\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn requests_are_recorded_and_retries_counted() {
        let server = MockServer::start(|request, seen| {
            Reply::status(500 + seen as u16, request.body["n"].to_string())
                .header("Retry-After", "2")
        });
        let first = post(&server, r#"{"n": 1}"#);
        assert!(first.starts_with("HTTP/1.1 500 Mock\r\n"), "{first}");
        assert!(first.contains("\r\nContent-Length: 1\r\n"), "{first}");
        assert!(first.contains("\r\nRetry-After: 2\r\n\r\n1"), "{first}");
        assert!(post(&server, r#"{"n": 1}"#).starts_with("HTTP/1.1 501 "));
        assert!(post(&server, r#"{"n": 2}"#).starts_with("HTTP/1.1 500 "));
        let requests = server.requests();
        assert_eq!(requests.len(), 3);
        assert_eq!(
            (requests[0].method.as_str(), requests[0].path.as_str()),
            ("POST", "/v1/x")
        );
        assert_eq!(requests[0].header("AUTHORIZATION"), Some("Bearer k"));
        assert_eq!(requests[2].body["n"], 2);
    }

    #[test]
    fn bodies_can_be_spoiled() {
        let server = MockServer::start(|request, _| {
            let reply = Reply::ok("0123456789");
            match request.body["how"].as_str().unwrap() {
                "truncated" => reply.truncated(),
                "cut_short" => reply.cut_short(),
                _ => Reply::stall(Duration::from_millis(10)),
            }
        });
        let truncated = post(&server, r#"{"how": "truncated"}"#);
        assert!(
            truncated.ends_with("Content-Length: 5\r\nConnection: close\r\n\r\n01234"),
            "{truncated}"
        );
        let cut = post(&server, r#"{"how": "cut_short"}"#);
        assert!(
            cut.ends_with("Content-Length: 10\r\nConnection: close\r\n\r\n01234"),
            "{cut}"
        );
        assert_eq!(post(&server, r#"{"how": "stall"}"#), "");
    }
}
