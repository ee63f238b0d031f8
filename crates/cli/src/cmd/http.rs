//! A minimal HTTP/1.1 GET for talking to our own admin API (`sumun status`): the admin
//! listener is ours and speaks plain HTTP on a management address, so a full client library
//! would cost more build time than it saves.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};

/// GET `path` from `base` (`http://host:port`), with `token` as the bearer token when given,
/// and parse the body as JSON.
pub fn get_json(
    base: &str,
    path: &str,
    token: Option<&sumun_config::AdminToken>,
) -> anyhow::Result<serde_json::Value> {
    let authority = base
        .strip_prefix("http://")
        .with_context(|| format!("admin URL '{base}' must start with http://"))?
        .trim_end_matches('/');
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve admin address '{authority}'"))?
        .next()
        .with_context(|| format!("admin address '{authority}' resolves to nothing"))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(3)).with_context(|| {
            format!("cannot reach the admin API at {base} (is the gateway running?)")
        })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // The request holds the token: allocated once (no copy left behind by a reallocation)
    // and wiped once sent.
    let head = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\n");
    let mut request = zeroize::Zeroizing::new(String::with_capacity(
        head.len() + token.map_or(0, |t| t.expose().len()) + 64,
    ));
    request.push_str(&head);
    if let Some(token) = token {
        request.push_str("Authorization: Bearer ");
        request.push_str(token.expose());
        request.push_str("\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream
        .take(64 * 1024 * 1024)
        .read_to_end(&mut response)
        .context("reading the admin API response")?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response from the admin API")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status == "401" {
        bail!(
            "admin API answered 401 for {path}: {}; pass --config with the gateway's config, or --token-file",
            if token.is_some() {
                "it does not accept this token"
            } else {
                "it asks for the bearer token in its [admin] token_file"
            }
        );
    }
    if status != "200" {
        bail!("admin API answered {status} for {path}");
    }
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)?
    } else {
        body.to_string()
    };
    serde_json::from_str(&body)
        .with_context(|| format!("admin API returned invalid JSON for {path}"))
}

fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("bad chunked encoding")?;
        let size = usize::from_str_radix(size.trim(), 16).context("bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).context("truncated chunk")?;
        out.push_str(chunk);
        body = rest.get(size + 2..).context("truncated chunk")?;
    }
}
