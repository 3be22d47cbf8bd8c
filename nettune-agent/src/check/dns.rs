//! A minimal DNS client for `nettune check`: one A query per lookup over UDP, as
//! `nslookup` sends it (RFC 1035 §4: a header, one question, recursion desired),
//! and the parts of the answer a lookup's outcome needs (its id, rcode and the A
//! records), plus the first `nameserver` of a `resolv.conf`.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

/// Resource record type A (RFC 1035 §3.2.2).
const TYPE_A: u16 = 1;
/// Class IN.
const CLASS_IN: u16 = 1;
/// Flags of a standard query with recursion desired.
const FLAGS_RD: u16 = 0x0100;
/// The header's QR bit: set in responses.
const FLAG_QR: u16 = 0x8000;
/// The header's TC bit: the answer was truncated.
const FLAG_TC: u16 = 0x0200;

/// Why a name cannot be asked for, or an answer cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// The name is empty, has an empty label, a label over 63 bytes or is over
    /// 253 bytes.
    #[error("`{0}` is not a valid DNS name")]
    BadName(String),
    /// The message ends before a field it announces.
    #[error("DNS message truncated at byte {0}")]
    Short(usize),
    /// Compression pointers loop, or point forwards.
    #[error("DNS name at byte {0} has a bad compression pointer")]
    BadPointer(usize),
    /// The message is a query, not a response.
    #[error("DNS message is not a response")]
    NotResponse,
}

/// A query for the A records of `name` with `id` (a trailing dot is optional).
pub fn encode_query(id: u16, name: &str) -> Result<Vec<u8>, CodecError> {
    let bad = || CodecError::BadName(name.to_owned());
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() || trimmed.len() > 253 {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(18 + trimmed.len());
    for field in [id, FLAGS_RD, 1, 0, 0, 0] {
        out.extend_from_slice(&field.to_be_bytes());
    }
    for label in trimmed.split('.') {
        let len = u8::try_from(label.len()).map_err(|_| bad())?;
        if len == 0 || len > 63 {
            return Err(bad());
        }
        out.push(len);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&TYPE_A.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(out)
}

/// What a response says, as far as a lookup needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The id it answers.
    pub id: u16,
    /// The response code (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED, …).
    pub rcode: u8,
    /// The TC bit.
    pub truncated: bool,
    /// The A records among the answers.
    pub addresses: Vec<Ipv4Addr>,
}

/// The name of a response code, as dig prints it.
pub fn rcode_name(rcode: u8) -> String {
    match rcode {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE{n}"),
    }
}

fn u16_at(msg: &[u8], at: usize) -> Result<u16, CodecError> {
    msg.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(CodecError::Short(at))
}

/// The offset just past the (possibly compressed) name starting at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Result<usize, CodecError> {
    loop {
        let len = *msg.get(at).ok_or(CodecError::Short(at))?;
        match len {
            0 => return Ok(at + 1),
            // A pointer ends the name in this place (RFC 1035 §4.1.4); where it
            // points must lie before it.
            l if l & 0xc0 == 0xc0 => {
                let target = usize::from(u16_at(msg, at)? & 0x3fff);
                if target >= at {
                    return Err(CodecError::BadPointer(at));
                }
                return Ok(at + 2);
            }
            l if l & 0xc0 != 0 => return Err(CodecError::BadPointer(at)),
            l => {
                at += 1 + usize::from(l);
                if at > msg.len() {
                    return Err(CodecError::Short(msg.len()));
                }
            }
        }
    }
}

/// Reads a response: header, questions skipped, A records of the answers.
pub fn decode_response(msg: &[u8]) -> Result<Response, CodecError> {
    let id = u16_at(msg, 0)?;
    let flags = u16_at(msg, 2)?;
    if flags & FLAG_QR == 0 {
        return Err(CodecError::NotResponse);
    }
    let questions = u16_at(msg, 4)?;
    let answers = u16_at(msg, 6)?;
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at)? + 4;
    }
    let mut addresses = Vec::new();
    for _ in 0..answers {
        at = skip_name(msg, at)?;
        let kind = u16_at(msg, at)?;
        let class = u16_at(msg, at + 2)?;
        let len = usize::from(u16_at(msg, at + 8)?);
        let data = msg
            .get(at + 10..at + 10 + len)
            .ok_or(CodecError::Short(at + 10))?;
        if kind == TYPE_A && class == CLASS_IN && len == 4 {
            addresses.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + len;
    }
    Ok(Response {
        id,
        rcode: u8::try_from(flags & 0x000f).unwrap_or(0),
        truncated: flags & FLAG_TC != 0,
        addresses,
    })
}

/// The first `nameserver` of the resolv.conf text read from `file`, on port 53;
/// `None` when it names none. A nameserver that is not an address is an error
/// naming the file and line.
pub fn nameserver(file: &Path, text: &str) -> anyhow::Result<Option<SocketAddr>> {
    for (n, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let value = words.next().unwrap_or("");
        // A scoped IPv6 address (fe80::1%eth0) is not supported here.
        let ip: IpAddr = value.parse().map_err(|_| {
            anyhow::anyhow!(
                "{}:{}: nameserver `{value}` is not an IP address",
                file.display(),
                n + 1
            )
        })?;
        return Ok(Some(SocketAddr::new(ip, 53)));
    }
    Ok(None)
}

/// How one lookup ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    /// An answer came, after `seconds`.
    Answered {
        /// Time from sending the query to reading its answer.
        seconds: f64,
        /// The answer's response code.
        rcode: u8,
        /// How many A records it held.
        addresses: usize,
    },
    /// No answer within the timeout.
    TimedOut,
    /// Sending or reading failed (e.g. the network is unreachable).
    Error(String),
}

impl Lookup {
    /// An answer with at least one address and NOERROR: the lookup worked.
    pub fn succeeded(&self) -> bool {
        matches!(self, Self::Answered { rcode: 0, addresses, .. } if *addresses > 0)
    }
}

/// One A lookup of `name` at `server` with `id`, waiting at most `timeout`
/// (answers to other ids, e.g. late ones, are skipped).
pub fn lookup(server: SocketAddr, name: &str, id: u16, timeout: Duration) -> Lookup {
    let attempt = || -> std::io::Result<Lookup> {
        let bind: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(bind)?;
        socket.connect(server)?;
        let query = encode_query(id, name).map_err(std::io::Error::other)?;
        let started = Instant::now();
        socket.send(&query)?;
        let mut buf = [0u8; 1500];
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Ok(Lookup::TimedOut);
            }
            socket.set_read_timeout(Some(left))?;
            let n = match socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(Lookup::TimedOut);
                }
                Err(e) => return Err(e),
            };
            let seconds = started.elapsed().as_secs_f64();
            match decode_response(&buf[..n]) {
                Ok(r) if r.id == id => {
                    return Ok(Lookup::Answered {
                        seconds,
                        rcode: r.rcode,
                        addresses: r.addresses.len(),
                    });
                }
                // Not ours, or not DNS: keep waiting for ours.
                _ => {}
            }
        }
    };
    attempt().unwrap_or_else(|e| Lookup::Error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dig ok.test` as dnsmasq answers it (id 0x1234, one compressed A record).
    fn answer(rcode: u8, with_record: bool) -> Vec<u8> {
        let mut msg = encode_query(0x1234, "ok.test").unwrap();
        msg[2] = 0x81;
        msg[3] = 0x80 | rcode;
        msg[7] = u8::from(with_record);
        if with_record {
            // Name: pointer to the question's name at offset 12.
            msg.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        }
        msg
    }

    #[test]
    fn a_query_is_the_bytes_dig_sends() {
        let q = encode_query(0xabcd, "ok.test.").unwrap();
        assert_eq!(
            q,
            [
                0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 2, b'o', b'k', 4, b't', b'e', b's',
                b't', 0, 0, 1, 0, 1
            ]
        );
        assert_eq!(
            encode_query(1, "ok.test").unwrap(),
            encode_query(1, "ok.test.").unwrap()[..]
        );
    }

    #[test]
    fn bad_names_are_refused() {
        for name in ["", ".", "a..b", &"x".repeat(64), &["abc"; 70].join(".")] {
            assert_eq!(
                encode_query(1, name),
                Err(CodecError::BadName(name.to_owned())),
                "{name}"
            );
        }
        assert!(encode_query(1, &"x".repeat(63)).is_ok());
    }

    #[test]
    fn an_answer_gives_its_id_rcode_and_addresses() {
        let r = decode_response(&answer(0, true)).unwrap();
        assert_eq!(
            r,
            Response {
                id: 0x1234,
                rcode: 0,
                truncated: false,
                addresses: vec![Ipv4Addr::new(192, 0, 2, 1)]
            }
        );
        let nx = decode_response(&answer(3, false)).unwrap();
        assert_eq!((nx.rcode, nx.addresses.len()), (3, 0));
        assert_eq!(rcode_name(nx.rcode), "NXDOMAIN");
    }

    #[test]
    fn broken_messages_are_errors_not_panics() {
        let full = answer(0, true);
        for cut in 0..full.len() {
            assert!(decode_response(&full[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(
            decode_response(&encode_query(1, "a").unwrap()),
            Err(CodecError::NotResponse)
        );
        // A pointer to itself.
        let mut looping = answer(0, true);
        let at = looping.len() - 16;
        looping[at + 1] = u8::try_from(at).unwrap();
        assert_eq!(decode_response(&looping), Err(CodecError::BadPointer(at)));
    }

    /// A loopback nameserver that answers each query as `reply` says (after a
    /// stray answer to another id first); `None`: never answers.
    fn nameserver_on_loopback(reply: Option<(u8, bool)>, queries: usize) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            for _ in 0..queries {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    return;
                };
                let Some((rcode, with_record)) = reply else {
                    continue;
                };
                // A stray SERVFAIL for another id first: a lookup taking it
                // would fail.
                let mut stray = answer(2, false);
                stray[..2].copy_from_slice(&[buf[0] ^ 0xff, buf[1]]);
                socket.send_to(&stray, from).unwrap();
                let mut msg = answer(rcode, with_record);
                msg[..2].copy_from_slice(&buf[..2]);
                assert!(n > 12);
                socket.send_to(&msg, from).unwrap();
            }
        });
        addr
    }

    #[test]
    fn a_lookup_waits_for_its_own_id_and_times_out_on_silence() {
        let timeout = Duration::from_millis(300);
        let ok = nameserver_on_loopback(Some((0, true)), 1);
        let got = lookup(ok, "ok.test", 0x4242, timeout);
        assert!(got.succeeded(), "{got:?}");
        assert!(matches!(
            got,
            Lookup::Answered {
                rcode: 0,
                addresses: 1,
                ..
            }
        ));
        let nx = nameserver_on_loopback(Some((3, false)), 1);
        let got = lookup(nx, "nx.test", 7, timeout);
        assert_eq!(
            (
                got.succeeded(),
                matches!(
                    got,
                    Lookup::Answered {
                        rcode: 3,
                        addresses: 0,
                        ..
                    }
                )
            ),
            (false, true)
        );
        let silent = nameserver_on_loopback(None, 1);
        let started = Instant::now();
        assert_eq!(lookup(silent, "ok.test", 1, timeout), Lookup::TimedOut);
        assert!(started.elapsed() >= timeout);
        // Nobody on the port: the kernel's refusal, not a timeout.
        let closed = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(matches!(
            lookup(closed, "ok.test", 1, timeout),
            Lookup::Error(_)
        ));
    }

    #[test]
    fn the_first_nameserver_is_used_and_a_bad_one_is_named_by_line() {
        let file = Path::new("/etc/netns/a/resolv.conf");
        let text = "# made by hand\nsearch test\nnameserver 10.0.0.10\nnameserver 10.0.0.11\n";
        assert_eq!(
            nameserver(file, text).unwrap(),
            Some("10.0.0.10:53".parse().unwrap())
        );
        assert_eq!(nameserver(file, "search x\n").unwrap(), None);
        let e = nameserver(file, "search x\nnameserver dns.local\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/netns/a/resolv.conf:2: nameserver `dns.local` is not an IP address"
        );
    }
}
