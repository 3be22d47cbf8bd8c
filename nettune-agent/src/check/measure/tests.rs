use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener},
    time::Duration,
};

use super::*;

#[test]
fn an_echo_request_checksums_to_zero_and_only_its_reply_matches() {
    let request = echo_request(0x1234, 7);
    assert_eq!(internet_checksum(&request), 0);
    assert_eq!(&request[..2], [8, 0]);
    // The reply as a raw socket reads it: a 20-byte IPv4 header first.
    let mut packet = vec![0x45; 1];
    packet.extend_from_slice(&[0; 19]);
    let mut reply = request.clone();
    reply[0] = 0;
    packet.extend_from_slice(&reply);
    assert!(is_echo_reply(&packet, 0x1234, 7));
    assert!(!is_echo_reply(&packet, 0x1234, 8));
    assert!(!is_echo_reply(&packet, 0x4321, 7));
    // Our own request, looped back on a raw socket, is no reply.
    packet[20] = 8;
    assert!(!is_echo_reply(&packet, 0x1234, 7));
    assert!(!is_echo_reply(&packet[..24], 0x1234, 7));
    assert!(!is_echo_reply(&[], 0x1234, 7));
    // RFC 1071's example: 0x0001 0xf203 0xf4f5 0xf6f7 sums to 0xddf2.
    assert_eq!(
        internet_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
        !0xddf2
    );
}

#[test]
fn urls_split_into_host_port_and_path() {
    let u = HttpUrl::parse("http://10.0.0.2:8080/x?y=1").unwrap();
    assert_eq!(
        (u.host.as_str(), u.authority.as_str(), u.path.as_str()),
        ("10.0.0.2", "10.0.0.2:8080", "/x?y=1")
    );
    let u = HttpUrl::parse("http://web").unwrap();
    assert_eq!((u.authority.as_str(), u.path.as_str()), ("web:80", "/"));
    let u = HttpUrl::parse("http://[fd00::2]:81/").unwrap();
    assert_eq!(u.authority, "[fd00::2]:81");
    assert!(
        HttpUrl::parse("https://x/")
            .unwrap_err()
            .to_string()
            .contains("only http://")
    );
    assert!(
        HttpUrl::parse("http://x:eighty/")
            .unwrap_err()
            .to_string()
            .contains("`eighty`")
    );
}

/// A loopback server answering each connection with `reply`.
fn server(reply: &'static [u8], connections: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(reply);
        }
    });
    addr
}

#[test]
fn http_counts_completed_non_2xx_and_broken_responses() {
    let ok = server(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", 6);
    let r = http_requests(
        &format!("http://{ok}/"),
        6,
        3,
        Duration::from_secs(2),
        Duration::from_secs(10),
        &Quiet,
    )
    .unwrap();
    assert_eq!((r.completed, r.errors, r.non_2xx), (6, 0, 0));
    assert_eq!(r.latency_ms.unwrap().count, 6);
    let missing = server(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 2);
    let r = http_requests(
        &format!("http://{missing}/"),
        2,
        1,
        Duration::from_secs(2),
        Duration::from_secs(10),
        &Quiet,
    )
    .unwrap();
    assert_eq!((r.completed, r.errors, r.non_2xx), (2, 0, 2));
    let short = server(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhi", 1);
    let r = http_requests(
        &format!("http://{short}/"),
        1,
        1,
        Duration::from_secs(2),
        Duration::from_secs(10),
        &Quiet,
    )
    .unwrap();
    assert_eq!((r.completed, r.errors), (0, 1));
    assert!(r.first_error.unwrap().contains("body ended at 2 of 10"));
}

#[test]
fn refused_connects_are_failures_with_their_reason() {
    // A port nobody listens on: bind, read the port, close.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let l = connect_latency(
        addr,
        3,
        Duration::from_secs(1),
        Duration::from_secs(5),
        &Quiet,
    );
    assert_eq!((l.attempts, l.failures, l.connect_ms), (3, 3, None));
    assert!(l.first_error.unwrap().to_lowercase().contains("refused"));
}
