//! Sysctl values: parsing, printing, and the one ordering the guardrails use.
//!
//! Every tunable moves in one direction, "more room": a larger queue, a wider port
//! range, a larger buffer maximum, `tcp_tw_reuse` from off (0) through loopback
//! only (2) to on (1). [`strength`] maps a value onto that direction (the tunable's
//! [`Scale`]) so that "never below what was found at start" and "never above the
//! ceiling" are one comparison for every shape.

use std::fmt;

use super::tunables::{Scale, Shape, Tunable};

/// A parsed sysctl value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// One integer.
    Int(u64),
    /// A pair, `low high`.
    Pair(u64, u64),
    /// A triple, `min default max`.
    Triple(u64, u64, u64),
    /// Kept as text (port lists).
    Text(String),
}

/// A value that does not fit its sysctl's shape.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a valid value for {name}")]
pub struct ValueError {
    /// The sysctl.
    pub name: &'static str,
    /// The text that did not parse.
    pub text: String,
}

impl Value {
    /// Parses what `/proc/sys` shows (whitespace-separated numbers).
    pub fn parse(spec: &Tunable, text: &str) -> Result<Self, ValueError> {
        let err = || ValueError {
            name: spec.name,
            text: text.trim().to_owned(),
        };
        if spec.shape == Shape::PortList {
            return Ok(Self::Text(text.trim().to_owned()));
        }
        let numbers: Vec<u64> = text
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| err())?;
        match (spec.shape, numbers.as_slice()) {
            (Shape::Int, [v]) => Ok(Self::Int(*v)),
            (Shape::Pair, [a, b]) if a <= b => Ok(Self::Pair(*a, *b)),
            (Shape::Triple, [a, b, c]) => Ok(Self::Triple(*a, *b, *c)),
            _ => Err(err()),
        }
    }
}

impl fmt::Display for Value {
    /// As written to `/proc/sys` (tab-separated like the kernel prints it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(v) => write!(f, "{v}"),
            Self::Pair(a, b) => write!(f, "{a}\t{b}"),
            Self::Triple(a, b, c) => write!(f, "{a}\t{b}\t{c}"),
            Self::Text(t) => f.write_str(t),
        }
    }
}

/// How much room a value gives, on one scale per sysctl (bigger = more room).
pub fn strength(spec: &Tunable, value: &Value) -> u64 {
    match (value, spec.scale) {
        (Value::Int(v), Scale::Ranked(order)) => {
            order.iter().position(|o| o == v).unwrap_or(0) as u64
        }
        (Value::Int(v), Scale::Magnitude) => *v,
        (Value::Pair(low, high), _) => high.saturating_sub(*low),
        (Value::Triple(_, _, max), _) => *max,
        (Value::Text(_), _) => 0,
    }
}

/// In every element, the more room of `a` and `b`: the larger integer (for a
/// ranked setting, the higher rank), a range's lower start and higher end, a
/// triple's larger minimum, default and maximum. `None` for port lists and
/// values of different shapes.
pub fn roomiest(spec: &Tunable, a: &Value, b: &Value) -> Option<Value> {
    Some(match (a, b) {
        (Value::Int(_), Value::Int(_)) => {
            if strength(spec, b) > strength(spec, a) {
                b.clone()
            } else {
                a.clone()
            }
        }
        (Value::Pair(a_low, a_high), Value::Pair(b_low, b_high)) => {
            Value::Pair(*a_low.min(b_low), *a_high.max(b_high))
        }
        (Value::Triple(a_min, a_default, a_max), Value::Triple(b_min, b_default, b_max)) => {
            Value::Triple(
                *a_min.max(b_min),
                *a_default.max(b_default),
                *a_max.max(b_max),
            )
        }
        _ => return None,
    })
}

/// Whether `have` gives at least the room of `want` in every element.
pub fn has_room_of(spec: &Tunable, have: &Value, want: &Value) -> bool {
    roomiest(spec, have, want).as_ref() == Some(have)
}

/// `value` moved up to `floor` on its [`strength`] scale, if below it: a ranked
/// setting to that rank, an integer to it, a range widened downwards to that
/// width (never starting below `lowest_port`), a triple's maximum to it.
pub fn at_least(spec: &Tunable, value: &Value, floor: u64, lowest_port: u64) -> Value {
    if strength(spec, value) >= floor {
        return value.clone();
    }
    match (value, spec.scale) {
        (Value::Int(_), Scale::Ranked(order)) => usize::try_from(floor)
            .ok()
            .and_then(|rank| order.get(rank))
            .or(order.last())
            .map_or_else(|| value.clone(), |v| Value::Int(*v)),
        (Value::Int(_), Scale::Magnitude) => Value::Int(floor),
        (Value::Pair(_, high), _) => {
            Value::Pair(high.saturating_sub(floor).max(lowest_port), *high)
        }
        (Value::Triple(min, default, _), _) => Value::Triple(*min, *default, floor),
        (Value::Text(_), _) => value.clone(),
    }
}

/// `current` moved towards more room by at most `step` (a factor ≥ 1), stopping at
/// `ceiling` (on the [`strength`] scale); a port range never starts below
/// `lowest_port`. `None` when it cannot move.
pub fn raise(
    spec: &Tunable,
    current: &Value,
    step: f64,
    ceiling: u64,
    lowest_port: u64,
) -> Option<Value> {
    let grow = |v: u64| -> u64 {
        let target = (v.max(1) as f64 * step).min(u64::MAX as f64) as u64;
        target.max(v.saturating_add(1)).min(ceiling)
    };
    let next = match current {
        // A ranked setting (a switch) goes to the highest rank the ceiling allows.
        Value::Int(v) => match spec.scale {
            Scale::Ranked(order) => {
                let top = usize::try_from(ceiling)
                    .unwrap_or(usize::MAX)
                    .min(order.len().saturating_sub(1));
                Value::Int(*order.get(top)?)
            }
            Scale::Magnitude => Value::Int(grow(*v)),
        },
        // Widen the range downwards: the top is usually the kernel's 60999 or 65535.
        Value::Pair(low, high) => {
            let width = grow(high.saturating_sub(*low));
            Value::Pair(high.saturating_sub(width).max(lowest_port), *high)
        }
        Value::Triple(min, default, max) => Value::Triple(*min, *default, grow(*max)),
        Value::Text(_) => return None,
    };
    (strength(spec, &next) > strength(spec, current) && strength(spec, &next) <= ceiling)
        .then_some(next)
}

/// `value` as the kernel keeps it once written to `spec` (with pages of
/// `page_size` bytes): rounded up to the sysctl's [`Granule`](super::tunables::Granule), if any.
pub fn normalise(spec: &Tunable, value: &Value, page_size: u64) -> Value {
    match (spec.granule, value) {
        (Some(g), Value::Int(v)) => {
            let m = g.multiple(page_size);
            Value::Int(v.div_ceil(m).saturating_mul(m))
        }
        _ => value.clone(),
    }
}

/// `value` normalised ([`normalise`]) and never past `ceiling` once it is: a
/// value the kernel would round up past the ceiling becomes the largest one it
/// keeps below it.
pub fn normalise_within(spec: &Tunable, value: &Value, ceiling: u64, page_size: u64) -> Value {
    let kept = normalise(spec, value, page_size);
    match (spec.granule, &kept) {
        (Some(g), Value::Int(v)) if strength(spec, &kept) > ceiling => {
            let m = g.multiple(page_size);
            Value::Int((ceiling / m * m).min(*v))
        }
        _ => kept,
    }
}

/// A list of ports and port ranges (`ip_local_reserved_ports`), as sorted,
/// merged inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortList(Vec<(u16, u16)>);

impl PortList {
    /// Parses `8080,30000-32767` (the kernel's format; spaces and an empty list
    /// allowed).
    pub fn parse(text: &str) -> Option<Self> {
        let mut ranges = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (low, high) = item.split_once('-').unwrap_or((item, item));
            let (low, high): (u16, u16) = (low.trim().parse().ok()?, high.trim().parse().ok()?);
            if low > high {
                return None;
            }
            ranges.push((low, high));
        }
        let mut list = Self(ranges);
        list.normalize();
        Some(list)
    }

    fn normalize(&mut self) {
        self.0.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(self.0.len());
        for (low, high) in self.0.drain(..) {
            match merged.last_mut() {
                Some(last) if u32::from(low) <= u32::from(last.1) + 1 => last.1 = last.1.max(high),
                _ => merged.push((low, high)),
            }
        }
        self.0 = merged;
    }

    /// The list of these single ports.
    pub fn of_ports(ports: impl IntoIterator<Item = u16>) -> Self {
        let mut list = Self(ports.into_iter().map(|p| (p, p)).collect());
        list.normalize();
        list
    }

    /// Whether the list holds no port.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Both lists together.
    #[must_use]
    pub fn union(&self, other: &Self) -> Self {
        let mut list = Self([self.0.as_slice(), other.0.as_slice()].concat());
        list.normalize();
        list
    }

    /// Whether every port of `other` is in this list.
    pub fn covers(&self, other: &Self) -> bool {
        other
            .0
            .iter()
            .all(|(l, h)| self.0.iter().any(|(a, b)| a <= l && h <= b))
    }
}

impl fmt::Display for PortList {
    /// As the kernel prints it: `8080,30000-32767`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .0
            .iter()
            .map(|(l, h)| {
                if l == h {
                    l.to_string()
                } else {
                    format!("{l}-{h}")
                }
            })
            .collect();
        f.write_str(&items.join(","))
    }
}

/// Whether `a` and `b` are the same value of `spec` as the kernel means it (tabs
/// or spaces, and the order of a port list, do not matter).
pub fn same_value(spec: &Tunable, a: &str, b: &str) -> bool {
    if spec.shape == Shape::PortList {
        return PortList::parse(a).is_some_and(|x| PortList::parse(b) == Some(x));
    }
    match (Value::parse(spec, a), Value::parse(spec, b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.split_whitespace().eq(b.split_whitespace()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tunables::lookup;

    fn spec(name: &str) -> &'static Tunable {
        lookup(name).unwrap()
    }

    fn raise1(spec: &Tunable, current: &Value, step: f64, ceiling: u64) -> Option<Value> {
        raise(spec, current, step, ceiling, 1024)
    }

    #[test]
    fn port_lists_merge_sort_and_cover() {
        let list = PortList::parse("30000-32767, 8080,8081,10250").unwrap();
        assert_eq!(list.to_string(), "8080-8081,10250,30000-32767");
        assert_eq!(PortList::parse("").unwrap().to_string(), "");
        assert!(PortList::parse("9-2").is_none());
        assert!(PortList::parse("70000").is_none());
        let more = list.union(&PortList::parse("9100,30010").unwrap());
        assert_eq!(more.to_string(), "8080-8081,9100,10250,30000-32767");
        assert!(more.covers(&list));
        assert!(!list.covers(&more));
        let reserved = spec("net.ipv4.ip_local_reserved_ports");
        assert!(same_value(reserved, "8080,30000-32767", "30000-32767,8080"));
        assert!(same_value(spec("net.ipv4.tcp_rmem"), "1\t2\t3", "1 2 3"));
        assert!(!same_value(spec("net.core.somaxconn"), "1", "2"));
    }

    #[test]
    fn parse_and_print_every_shape() {
        let somaxconn = spec("net.core.somaxconn");
        assert_eq!(Value::parse(somaxconn, "4096\n"), Ok(Value::Int(4096)));
        let range = spec("net.ipv4.ip_local_port_range");
        assert_eq!(
            Value::parse(range, "32768\t60999\n"),
            Ok(Value::Pair(32768, 60999))
        );
        assert!(Value::parse(range, "60999 32768").is_err());
        let rmem = spec("net.ipv4.tcp_rmem");
        let v = Value::parse(rmem, "4096\t131072\t6291456").unwrap();
        assert_eq!(v.to_string(), "4096\t131072\t6291456");
        assert!(Value::parse(somaxconn, "4096 1").is_err());
        assert!(Value::parse(somaxconn, "-1").is_err());
        assert_eq!(
            Value::parse(somaxconn, "lots").unwrap_err().to_string(),
            "`lots` is not a valid value for net.core.somaxconn"
        );
    }

    #[test]
    fn raise_is_bounded_by_step_and_ceiling() {
        let s = spec("net.core.somaxconn");
        assert_eq!(
            raise1(s, &Value::Int(4096), 2.0, 32768),
            Some(Value::Int(8192))
        );
        assert_eq!(
            raise1(s, &Value::Int(20000), 2.0, 32768),
            Some(Value::Int(32768))
        );
        assert_eq!(raise1(s, &Value::Int(32768), 2.0, 32768), None);
        assert_eq!(raise1(s, &Value::Int(40000), 2.0, 32768), None);
        assert_eq!(raise1(s, &Value::Int(0), 2.0, 10), Some(Value::Int(2)));
    }

    #[test]
    fn integer_edges_do_not_overflow() {
        let s = spec("net.netfilter.nf_conntrack_max");
        assert_eq!(
            raise1(s, &Value::Int(u64::MAX - 1), 2.0, u64::MAX),
            Some(Value::Int(u64::MAX))
        );
        assert_eq!(raise1(s, &Value::Int(u64::MAX), 2.0, u64::MAX), None);
        let i32_max = u64::from(i32::MAX.unsigned_abs());
        assert_eq!(raise1(s, &Value::Int(i32_max), 2.0, i32_max), None);
        assert_eq!(
            raise1(s, &Value::Int(i32_max - 1), 1.25, i32_max),
            Some(Value::Int(i32_max))
        );
        let u32_max = u64::from(u32::MAX);
        assert_eq!(
            raise1(s, &Value::Int(u32_max / 2 + 1), 2.0, u32_max),
            Some(Value::Int(u32_max))
        );
    }

    #[test]
    fn multi_value_sysctls_move_the_right_part() {
        let range = spec("net.ipv4.ip_local_port_range");
        // Width 28231 doubled would pass 1024: stop at the ceiling width 64511.
        assert_eq!(
            raise1(range, &Value::Pair(32768, 60999), 2.0, 65535 - 1024),
            Some(Value::Pair(4537, 60999))
        );
        // Never into the privileged ports: the low end stops at 1024.
        assert_eq!(
            raise1(range, &Value::Pair(4537, 60999), 2.0, 65535 - 1024),
            Some(Value::Pair(1024, 60999))
        );
        assert_eq!(
            raise1(range, &Value::Pair(1024, 60999), 2.0, 65535 - 1024),
            None
        );
        let rmem = spec("net.ipv4.tcp_rmem");
        assert_eq!(
            raise1(rmem, &Value::Triple(4096, 131072, 6291456), 2.0, 16777216),
            Some(Value::Triple(4096, 131072, 12582912))
        );
        assert_eq!(
            raise1(rmem, &Value::Triple(4096, 131072, 16777216), 2.0, 16777216),
            None
        );
    }

    #[test]
    fn tw_reuse_goes_from_off_or_loopback_to_on() {
        let s = spec("net.ipv4.tcp_tw_reuse");
        assert_eq!(raise1(s, &Value::Int(2), 2.0, 2), Some(Value::Int(1)));
        assert_eq!(raise1(s, &Value::Int(0), 2.0, 2), Some(Value::Int(1)));
        assert_eq!(raise1(s, &Value::Int(1), 2.0, 2), None);
        assert!(strength(s, &Value::Int(1)) > strength(s, &Value::Int(2)));
    }
}
