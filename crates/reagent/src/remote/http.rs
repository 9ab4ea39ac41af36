//! JSON over HTTP with a per-request timeout, bounded bodies, pooled connections and retries
//! with exponential backoff and jitter. Nothing here prints or stores the API key: it goes into
//! the `Authorization` header and nowhere else, and errors name the server without the userinfo
//! part of its address.

use std::io::Read;
use std::time::Duration;

use rand::Rng;
use serde_json::Value;

use crate::{Error, Result};

/// The largest response body read: a reply of llama.cpp's `n_probs: 1000` is about 120 KB, so
/// 32 MiB leaves room for long prompt log-probabilities and still bounds a hostile server.
pub const MAX_BODY_BYTES: u64 = 32 << 20;

/// How requests behave.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Seconds one request may take (connect, send, and read the reply).
    pub timeout_s: f64,
    /// Further tries after a connection error, a 429 or a 5xx.
    pub retries: usize,
    /// Seconds before the first retry; each further one waits twice as long (at most 30 s),
    /// with up to 50 % random jitter.
    pub backoff_s: f64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            timeout_s: 120.0,
            retries: 6,
            backoff_s: 0.25,
        }
    }
}

/// A JSON client for one server.
pub struct Client {
    agent: ureq::Agent,
    /// The root of the server (`http://host:port`), without the userinfo part.
    root: String,
    key: Option<String>,
    settings: HttpSettings,
}

/// What a failed request looked like.
#[derive(Debug)]
pub enum Failure {
    /// The server answered with this status and (the first line of) this body.
    Status(u16, String),
    /// No usable answer: refused, reset, timed out, or a body that was not JSON.
    Transport(String),
    /// A reply no retry will fix (larger than the limit).
    Reply(String),
}

impl Failure {
    fn retriable(&self) -> bool {
        match self {
            Failure::Status(s, _) => *s == 429 || *s >= 500,
            Failure::Transport(_) => true,
            Failure::Reply(_) => false,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status(s, body) if body.is_empty() => write!(f, "HTTP {s}"),
            Failure::Status(s, body) => write!(f, "HTTP {s}: {body}"),
            Failure::Transport(m) | Failure::Reply(m) => f.write_str(m),
        }
    }
}

/// Split `http[s]://[user@]host[:port][/path]` into the root without userinfo and the path.
pub fn split_url(url: &str) -> Result<(String, String)> {
    let url = url.trim().trim_end_matches('/');
    let (scheme, rest) = url
        .split_once("://")
        .filter(|(s, _)| *s == "http" || *s == "https")
        .ok_or_else(|| {
            Error::input(format!(
                "{url:?} is not a server address: it must start with http:// or https://"
            ))
        })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let host = authority.rsplit('@').next().unwrap_or(authority);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(Error::input(format!(
            "the server address has no host: {scheme}://{host}{path}"
        )));
    }
    Ok((format!("{scheme}://{host}"), path.to_string()))
}

impl Client {
    /// A client for the server at `root` (from [`split_url`]).
    pub fn new(root: String, key: Option<String>, settings: HttpSettings) -> Self {
        let timeout = Duration::from_secs_f64(settings.timeout_s.max(0.001));
        let agent = ureq::AgentBuilder::new()
            .timeout(timeout)
            .max_idle_connections_per_host(64)
            .build();
        Client {
            agent,
            root,
            key,
            settings,
        }
    }

    /// The address a request to `path` goes to, as messages show it (no credentials).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.root)
    }

    /// `GET root + path` once (no retries): the reply's JSON, or why there is none.
    pub fn get_once(&self, path: &str) -> std::result::Result<Value, Failure> {
        self.send(path, None)
    }

    /// `POST root + path` once (no retries).
    pub fn post_once(&self, path: &str, body: &Value) -> std::result::Result<Value, Failure> {
        self.send(path, Some(body))
    }

    /// `POST root + path` with retries on connection errors, 429 and 5xx; a one-line error
    /// naming the server and the last failure when they run out.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.with_retries(path, || self.send(path, Some(body)))
    }

    /// `GET root + path` with retries.
    pub fn get(&self, path: &str) -> Result<Value> {
        self.with_retries(path, || self.send(path, None))
    }

    fn with_retries(
        &self,
        path: &str,
        mut f: impl FnMut() -> std::result::Result<Value, Failure>,
    ) -> Result<Value> {
        let mut wait = self.settings.backoff_s;
        let mut tries = 0;
        loop {
            tries += 1;
            match f() {
                Ok(v) => return Ok(v),
                Err(e) if e.retriable() && tries <= self.settings.retries => {
                    let jitter = 1.0 + 0.5 * rand::rng().random::<f64>();
                    std::thread::sleep(Duration::from_secs_f64((wait * jitter).min(30.0)));
                    wait = (wait * 2.0).min(30.0);
                }
                Err(e) => {
                    return Err(Error::Remote(format!(
                        "{}: {e} (after {tries} {})",
                        self.url(path),
                        if tries == 1 { "try" } else { "tries" }
                    )));
                }
            }
        }
    }

    fn send(&self, path: &str, body: Option<&Value>) -> std::result::Result<Value, Failure> {
        let url = self.url(path);
        let mut req = match body {
            Some(_) => self.agent.post(&url),
            None => self.agent.get(&url),
        };
        if let Some(k) = &self.key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match res {
            Ok(r) => read_json(r),
            Err(ureq::Error::Status(code, r)) => {
                let text = read_limited(r, 4096).unwrap_or_default();
                let first = String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect::<String>();
                Err(Failure::Status(code, self.scrub(&first)))
            }
            Err(ureq::Error::Transport(t)) => {
                // ureq starts its message with the address, which the caller names already.
                let text = t.to_string();
                let line = text.lines().next().unwrap_or("connection failed");
                let line = line.strip_prefix(&format!("{url}: ")).unwrap_or(line);
                Err(Failure::Transport(self.scrub(line)))
            }
        }
    }

    /// A message with the key (should a server echo it) replaced.
    fn scrub(&self, s: &str) -> String {
        match &self.key {
            Some(k) if !k.is_empty() => s.replace(k.as_str(), "***"),
            _ => s.to_string(),
        }
    }
}

fn read_limited(r: ureq::Response, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.into_reader().take(limit + 1).read_to_end(&mut buf)?;
    Ok(buf)
}

fn read_json(r: ureq::Response) -> std::result::Result<Value, Failure> {
    let body = read_limited(r, MAX_BODY_BYTES)
        .map_err(|e| Failure::Transport(format!("reading the reply failed: {e}")))?;
    if body.len() as u64 > MAX_BODY_BYTES {
        return Err(Failure::Reply(format!(
            "the reply is larger than {} MiB",
            MAX_BODY_BYTES >> 20
        )));
    }
    serde_json::from_slice(&body).map_err(|e| {
        Failure::Transport(format!(
            "the reply is not JSON ({e}); is this an OpenAI-compatible server?"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_userinfo() {
        let (root, path) = split_url("https://user:secret@example.org:8443/v1/").unwrap();
        assert_eq!(root, "https://example.org:8443");
        assert_eq!(path, "/v1");
        assert!(split_url("ftp://x").is_err());
        assert!(split_url("http://").is_err());
        assert_eq!(
            split_url("http://h:1").unwrap(),
            ("http://h:1".into(), "".into())
        );
    }
}
