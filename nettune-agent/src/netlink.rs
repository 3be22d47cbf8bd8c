//! Listing network interfaces and their kind (veth, bridge, ...) over rtnetlink.
//!
//! The agent watches pods' host-side interfaces, which most CNIs make as veth
//! pairs. sysfs does not say an interface is a veth; rtnetlink does
//! (`IFLA_LINKINFO` → `IFLA_INFO_KIND`). One `RTM_GETLINK` dump per refresh.

use std::io;

/// An interface of the calling thread's network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    /// `IFLA_INFO_KIND`, e.g. `veth`; `None` for physical devices and loopback.
    pub kind: Option<String>,
    /// `IFLA_LINK`: for a veth, its peer's ifindex (in the peer's namespace).
    pub peer_ifindex: Option<u32>,
}

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const NLMSG_HDR_LEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

/// All interfaces of the calling thread's namespace.
pub fn links() -> io::Result<Vec<Link>> {
    // SAFETY: plain socket creation; the fd is owned by `Fd` below and closed on drop.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = Fd(fd);
    let mut request = Vec::with_capacity(NLMSG_HDR_LEN + IFINFOMSG_LEN);
    let len = u32::try_from(NLMSG_HDR_LEN + IFINFOMSG_LEN).unwrap_or(32);
    request.extend_from_slice(&len.to_ne_bytes());
    request.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
    request.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    request.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    request.extend_from_slice(&[0u8; IFINFOMSG_LEN]); // AF_UNSPEC, all interfaces
    // SAFETY: sends `request.len()` bytes from a live buffer on our socket.
    if unsafe { libc::send(fd.0, request.as_ptr().cast(), request.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut links = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: receives into a live buffer of `buf.len()` bytes.
        let n = unsafe { libc::recv(fd.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        if parse_messages(&buf[..n], &mut links)? {
            return Ok(links);
        }
    }
}

struct Fd(i32);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: closes a descriptor this struct owns, once.
        unsafe { libc::close(self.0) };
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Parses one datagram of a link dump into `links`; returns true at `NLMSG_DONE`.
pub fn parse_messages(mut b: &[u8], links: &mut Vec<Link>) -> io::Result<bool> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed netlink message");
    while b.len() >= NLMSG_HDR_LEN {
        let len = u32_at(b, 0).ok_or_else(bad)? as usize;
        let kind = u16_at(b, 4).ok_or_else(bad)?;
        if len < NLMSG_HDR_LEN || len > b.len() {
            return Err(bad());
        }
        let body = &b[NLMSG_HDR_LEN..len];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = u32_at(body, 0).ok_or_else(bad)?.cast_signed();
                if errno != 0 {
                    return Err(io::Error::from_raw_os_error(-errno));
                }
            }
            RTM_NEWLINK => links.push(parse_link(body).ok_or_else(bad)?),
            _ => {}
        }
        b = &b[align4(len).min(b.len())..];
    }
    Ok(false)
}

fn parse_link(body: &[u8]) -> Option<Link> {
    let ifindex = u32_at(body, 4)?;
    let mut link = Link {
        ifindex,
        name: String::new(),
        kind: None,
        peer_ifindex: None,
    };
    for (kind, value) in attributes(body.get(IFINFOMSG_LEN..)?) {
        match kind {
            IFLA_IFNAME => link.name = c_string(value),
            IFLA_LINK => link.peer_ifindex = u32_at(value, 0),
            IFLA_LINKINFO => {
                link.kind = attributes(value)
                    .find(|(k, _)| *k == IFLA_INFO_KIND)
                    .map(|(_, v)| c_string(v));
            }
            _ => {}
        }
    }
    Some(link)
}

/// Iterates `(type, value)` over a run of rtattrs (nested flag bits masked off).
fn attributes(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(b, 0)?);
        let kind = u16_at(b, 2)? & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let value = &b[4..len];
        b = &b[align4(len).min(b.len())..];
        Some((kind, value))
    })
}

fn c_string(v: &[u8]) -> String {
    let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = u16::try_from(4 + value.len()).unwrap();
        let mut out = [len.to_ne_bytes(), kind.to_ne_bytes()].concat();
        out.extend_from_slice(value);
        out.resize(align4(out.len()), 0);
        out
    }

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(NLMSG_HDR_LEN + body.len()).unwrap();
        let mut out = len.to_ne_bytes().to_vec();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&[0; 10]);
        out.extend_from_slice(body);
        out.resize(align4(out.len()), 0);
        out
    }

    fn newlink(ifindex: u32, name: &str, kind: Option<&str>) -> Vec<u8> {
        let mut body = vec![0u8; 4];
        body.extend_from_slice(&ifindex.to_ne_bytes());
        body.extend_from_slice(&[0; 8]);
        body.extend(attr(IFLA_IFNAME, format!("{name}\0").as_bytes()));
        if let Some(kind) = kind {
            body.extend(attr(IFLA_LINK, &9u32.to_ne_bytes()));
            body.extend(attr(
                IFLA_LINKINFO,
                &attr(IFLA_INFO_KIND, format!("{kind}\0").as_bytes()),
            ));
        }
        message(RTM_NEWLINK, &body)
    }

    #[test]
    fn parses_names_kinds_and_the_end_of_the_dump() {
        let mut datagram = newlink(1, "lo", None);
        datagram.extend(newlink(7, "veth1a2b", Some("veth")));
        let mut links = Vec::new();
        assert!(!parse_messages(&datagram, &mut links).unwrap());
        assert_eq!(links.len(), 2);
        assert_eq!(
            links[1],
            Link {
                ifindex: 7,
                name: "veth1a2b".into(),
                kind: Some("veth".into()),
                peer_ifindex: Some(9),
            }
        );
        assert_eq!(links[0].kind, None);
        assert!(parse_messages(&message(NLMSG_DONE, &[0; 4]), &mut links).unwrap());
    }

    #[test]
    fn errors_and_garbage_are_errors() {
        let err = message(NLMSG_ERROR, &(-1i32).to_ne_bytes());
        assert_eq!(
            parse_messages(&err, &mut Vec::new())
                .unwrap_err()
                .raw_os_error(),
            Some(1)
        );
        let mut bad = newlink(3, "x", None);
        bad[0] = 200;
        assert!(parse_messages(&bad, &mut Vec::new()).is_err());
    }
}
