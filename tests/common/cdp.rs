//! A minimal Chrome DevTools Protocol client over a WebSocket, as DevTools or VS Code speak
//! it: to a worker's V8 inspector (`tests/inspector.rs`) and to headless Chromium
//! (`common::browser`).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use super::wait_for;

/// GET `path` from a DevTools HTTP endpoint once it answers. The body is read to its
/// `Content-Length`: Chromium keeps the connection open.
pub fn http_json(port: u16, path: &str) -> Value {
    wait_for(&format!("the DevTools endpoint answers on port {port}"), Duration::from_secs(20), || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").ok()?;
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&response).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head.lines().find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
                });
                if length.is_some_and(|length| body.len() >= length) {
                    return Some(serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}")));
                }
            }
            match stream.read(&mut buf).ok()? {
                0 => {
                    let (_, body) = text.split_once("\r\n\r\n")?;
                    return Some(serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}")));
                }
                n => response.extend_from_slice(&buf[..n]),
            }
        }
    })
}

/// The endpoint's targets once there is one: V8's inspector answers before the worker has
/// registered, so an empty list means "not yet".
pub fn targets(port: u16) -> Vec<Value> {
    wait_for(&format!("a target is listed on port {port}"), Duration::from_secs(20), || {
        let list = http_json(port, "/json/list");
        let list = list.as_array().cloned().unwrap_or_default();
        (!list.is_empty()).then_some(list)
    })
}

/// A minimal CDP client: numbered calls, and the events that arrive meanwhile.
pub struct Cdp {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    events: VecDeque<Value>,
}

impl Cdp {
    /// Connects to the endpoint's first page (Chromium), else its first target (a worker).
    pub fn connect(port: u16) -> (Cdp, Value) {
        let listed = targets(port);
        let target = listed.iter().find(|t| t["type"] == "page").unwrap_or(&listed[0]).clone();
        let url = target["webSocketDebuggerUrl"].as_str().unwrap().to_string();
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let (ws, _) = tungstenite::client(url.as_str(), stream).unwrap();
        (Cdp { ws, next_id: 0, events: VecDeque::new() }, target)
    }

    fn read(&mut self) -> Value {
        loop {
            match self.ws.read().expect("the DevTools endpoint closed the connection") {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                _ => continue,
            }
        }
    }

    /// Calls `method` and returns its result; fails the test on an error.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params).unwrap_or_else(|error| panic!("{method}: {error}"))
    }

    /// Calls `method`: its result, or the error it answered.
    pub fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(request)).unwrap();
        loop {
            let message = self.read();
            if message["id"] == id {
                return match message.get("error") {
                    Some(error) => Err(error.clone()),
                    None => Ok(message["result"].clone()),
                };
            }
            self.events.push_back(message);
        }
    }

    pub fn event(&mut self, method: &str) -> Value {
        if let Some(i) = self.events.iter().position(|e| e["method"] == method) {
            return self.events.remove(i).unwrap()["params"].clone();
        }
        loop {
            let message = self.read();
            if message["method"] == method {
                return message["params"].clone();
            }
            self.events.push_back(message);
        }
    }
}
