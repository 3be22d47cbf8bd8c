//! A minimal HTTP/1.0 GET for talking to a nettune agent (`nettune top --agent`)
//! without pulling an HTTP client stack into the binary.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, ToSocketAddrs as _},
    time::Duration,
};

/// Errors fetching a URL.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("`{0}` is not an http://host:port URL")]
    BadUrl(String),
    #[error("{url}: {source}")]
    Io {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
}

/// Splits `http://host:port[/...]` into the address.
pub fn parse_base(url: &str) -> Result<SocketAddr, HttpError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HttpError::BadUrl(url.into()))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| HttpError::BadUrl(url.into()))
}

/// `GET path` on `addr`; returns (status, body).
pub fn get_raw(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {head:?}")))?;
    Ok((status, body.to_owned()))
}

/// `GET path` on `addr`, failing unless the status is 200.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String, HttpError> {
    let url = format!("http://{addr}{path}");
    match get_raw(addr, path, timeout) {
        Ok((200, body)) => Ok(body),
        Ok((status, body)) => Err(HttpError::Status {
            url,
            status,
            body: body.trim().to_owned(),
        }),
        Err(source) => Err(HttpError::Io { url, source }),
    }
}
