//! A minimal HTTP/1.0 client over a plain socket, for tests that talk JSON to a local listener
//! (no HTTP client crate, no connection reuse: one request per connection, read to the end).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

/// How long one exchange may take (a code_interpreter turn included).
const TIMEOUT: Duration = Duration::from_secs(60);

/// The answer: status code and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {} {}", self.status, self.body))
    }
}

/// `method http://addr/path` with an optional JSON body; `Err` when the exchange fails.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text}")))?;
    Ok(Answer { status, body: body.to_owned() })
}

/// [`request`] that panics when the exchange itself fails.
pub fn call(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Answer {
    request(addr, method, path, body)
        .unwrap_or_else(|error| panic!("{method} http://{addr}{path}: {error}"))
}
