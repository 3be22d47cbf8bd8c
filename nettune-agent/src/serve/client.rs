//! A bounded HTTP GET (hyper's HTTP/1 client), for `nettune top --agent` and the
//! tests that read an agent's endpoints: one request per connection, a deadline on
//! the whole exchange, and a cap on the body size — a remote agent cannot make
//! the viewer wait forever or read an unbounded body.

use std::{
    net::{SocketAddr, ToSocketAddrs as _},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{Request, header};
use hyper_util::rt::TokioIo;

/// The largest body [`get`] reads by default: a Snapshot of thousands of pods.
pub const DEFAULT_MAX_BODY: usize = 32 << 20;

/// Errors fetching a URL.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Not an `http://host:port` URL.
    #[error("`{0}` is not an http://host:port URL")]
    BadUrl(String),
    /// Connecting, sending or receiving failed, or took too long.
    #[error("{url}: {source}")]
    Transfer {
        /// What was fetched.
        url: String,
        /// What went wrong.
        #[source]
        source: TransferError,
    },
    /// The server answered with a status other than 200.
    #[error("{url} answered {status}: {body}")]
    Status {
        /// What was fetched.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The body, trimmed.
        body: String,
    },
}

/// Why one exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The TCP connection could not be made.
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The request could not be built.
    #[error("bad request: {0}")]
    Request(#[source] hyper::http::Error),
    /// The HTTP exchange failed.
    #[error("{0}")]
    Http(#[source] hyper::Error),
    /// The body could not be read, or was larger than allowed.
    #[error("reading the body: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The whole exchange took longer than its deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// No runtime could be started for a blocking call.
    #[error("cannot start an async runtime: {0}")]
    Runtime(#[source] std::io::Error),
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

/// `GET path` on `addr`: the status and at most `max_body` bytes of body, within
/// `timeout` for the whole exchange.
pub async fn get_raw(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    max_body: usize,
) -> Result<(u16, Bytes), TransferError> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(TransferError::Connect)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(TransferError::Http)?;
        let connection = tokio::spawn(connection);
        let request = Request::get(path)
            .header(header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(TransferError::Request)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(TransferError::Http)?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), max_body)
            .collect()
            .await
            .map_err(TransferError::Body)?
            .to_bytes();
        connection.abort();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| TransferError::Timeout(timeout))?
}

/// [`get_raw`] from synchronous code (a runtime of its own for the call).
pub fn get_raw_blocking(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    max_body: usize,
) -> Result<(u16, Bytes), TransferError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(TransferError::Runtime)?
        .block_on(get_raw(addr, path, timeout, max_body))
}

/// `GET path` on `addr`, failing unless the status is 200; at most
/// [`DEFAULT_MAX_BODY`] bytes.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Bytes, HttpError> {
    let url = format!("http://{addr}{path}");
    match get_raw_blocking(addr, path, timeout, DEFAULT_MAX_BODY) {
        Ok((200, body)) => Ok(body),
        Ok((status, body)) => Err(HttpError::Status {
            url,
            status,
            body: String::from_utf8_lossy(&body).trim().to_owned(),
        }),
        Err(source) => Err(HttpError::Transfer { url, source }),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    #[test]
    fn a_body_larger_than_the_cap_is_refused_not_read_to_the_end() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // A hostile or broken agent: an endless body.
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            // Answer only once the request is in: a reply before it makes hyper
            // cancel the exchange, which is not what is tested here.
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read_exact(&mut byte).is_ok() {
                request.push(byte[0]);
            }
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
            while stream.write_all(chunk.as_bytes()).is_ok() {}
        });
        let err = get_raw_blocking(addr, "/api/v1/snapshot", Duration::from_secs(10), 1 << 20)
            .unwrap_err();
        assert!(matches!(err, TransferError::Body(_)), "{err}");
    }
}
