//! HTTP/1.1 spoken by hand over TCP, for the tests where a misbehaving or interrupted client is
//! the point (a request must be provably in flight, a body dribbled, a connection left idle),
//! which no HTTP client library lets a test do.

use serde_json::Value;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long a read waits for the server to act; generous, never asserted as a speed.
const PATIENCE: Duration = Duration::from_secs(30);

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The head of a delivery of `body` to `source` signed now with `secret`, declaring its full
/// length (so the body may follow later, or never).
pub fn delivery_head(source: &str, secret: &str, body: &str) -> String {
    let ts = super::now();
    format!(
        "POST /api/webhooks/{source} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nX-Webhook-Timestamp: {ts}\r\n\
         X-Webhook-Signature: {}\r\nContent-Length: {}\r\n\r\n",
        super::signature(secret, ts, body.as_bytes()),
        body.len()
    )
}

/// The status code of a raw HTTP response.
pub fn status_of(response: &str) -> Option<u16> {
    response.split(' ').nth(1)?.parse().ok()
}

/// The JSON body of a raw HTTP response (not chunked).
pub fn body_of(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// Reads until the server closes the connection (or 30 s pass: `None`); what it sent.
pub async fn read_until_closed(stream: &mut TcpStream) -> Option<String> {
    let mut all = Vec::new();
    let mut buf = [0u8; 8192];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read).await.ok()?;
    Some(String::from_utf8_lossy(&all).into_owned())
}

/// A response head (an interim `100 Continue`), read byte by byte so nothing after it is taken.
pub async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let read = async {
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte).await {
                Ok(0) | Err(_) => return,
                Ok(_) => head.push(byte[0]),
            }
        }
    };
    let _ = tokio::time::timeout(PATIENCE, read).await;
    String::from_utf8_lossy(&head).into_owned()
}

/// One HTTP response, read until its declared length.
pub async fn read_response(s: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 8192];
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&all).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)));
                if len.is_some_and(|n| body.len() >= n) {
                    return;
                }
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(PATIENCE, read).await;
    String::from_utf8_lossy(&all).into_owned()
}
