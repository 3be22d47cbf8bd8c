//! When to count connects that fail for lack of a local port.
//!
//! The program that counts them (`tp_btf/inet_sock_set_state`) runs on every
//! TCP state change of every socket on the node, about ten per connection, so
//! it is attached only while there is something to see. A connect fails with
//! `EADDRNOTAVAIL` only when every port of its namespace's ephemeral range is
//! held for that destination, so a namespace is **crowded** when its TCP sockets
//! (`/proc/net/sockstat`: in use, and TIME_WAIT) hold at least [`ARM_SHARE`] of
//! its range; with `tcp_tw_reuse = 1` a TIME_WAIT socket gives its port to a
//! new connect after a second, so only as many TIME_WAIT sockets count as
//! connects were opened in the last second. The program is attached while any
//! namespace is crowded and detached once every namespace has stayed under
//! [`CALM_SHARE`] for [`CALM_TICKS`] ticks. A namespace is judged by its own
//! range and reuse setting (read when its listeners are looked at): one that
//! would be crowded under the defaults but was not looked at yet is looked at
//! first and judged the tick after, so a lingering TIME_WAIT pile in a
//! namespace that reuses its ports does not attach the program. A namespace that fills its range from
//! under half within one tick loses its first failures (the TIME_WAIT figures
//! still show it, and the `port_exhaustion` rule reads those too).

use crate::model::sample::{NetnsSample, Sample};

/// The share of a namespace's ephemeral range held that attaches the program.
pub const ARM_SHARE: f64 = 0.5;
/// Below this share everywhere (for [`CALM_TICKS`]), the program is detached.
pub const CALM_SHARE: f64 = 0.25;
/// Ticks every namespace must stay calm before the program is detached.
pub const CALM_TICKS: u32 = 60;
/// `net.ipv4.ip_local_port_range`'s default, for a namespace not looked at yet.
const DEFAULT_RANGE: (u32, u32) = (32768, 60999);

/// The decision, carried from tick to tick.
#[derive(Debug, Default)]
pub struct PortWatch {
    /// Whether the program should be attached.
    pub armed: bool,
    /// Ticks every namespace has been calm while armed.
    calm: u32,
}

/// The most crowded namespace of a tick: (netns, ports held, range width).
pub type Crowded = (u32, u64, u64);

/// What a tick decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The most crowded namespace, when this tick attaches the program.
    pub newly_crowded: Option<Crowded>,
    /// Namespaces that would be crowded under the default range and reuse but
    /// whose own are unknown: to be looked at first (`collect::listeners`
    /// reads them), judged once known.
    pub to_look_at: Vec<u32>,
}

impl PortWatch {
    /// Updates the decision from this tick's `sample` (and the previous one,
    /// `seconds` before, for the connects of the last second).
    pub fn update(&mut self, sample: &Sample, previous: Option<(&Sample, f64)>) -> Verdict {
        let mut verdict = Verdict::default();
        let mut fullest: Option<Crowded> = None;
        for (inode, ns) in &sample.netns {
            let before = previous.and_then(|(p, s)| Some((p.netns.get(inode)?, s)));
            match judge(ns, before) {
                Judged::Held(held, width) => {
                    let c = (*inode, held, width);
                    if fullest.is_none_or(|f| share(&c) > share(&f)) {
                        fullest = Some(c);
                    }
                }
                Judged::NeedsALook => verdict.to_look_at.push(*inode),
                Judged::Unknown => {}
            }
        }
        let most = fullest.map_or(0.0, |c| share(&c));
        if most >= ARM_SHARE {
            self.calm = 0;
            if !self.armed {
                verdict.newly_crowded = fullest;
            }
            self.armed = true;
        } else if self.armed {
            self.calm = if most < CALM_SHARE { self.calm + 1 } else { 0 };
            if self.calm >= CALM_TICKS {
                self.armed = false;
                self.calm = 0;
            }
        }
        verdict
    }
}

fn share(&(_, held, width): &Crowded) -> f64 {
    held as f64 / width.max(1) as f64
}

/// One namespace's ports, as far as this tick knows.
#[derive(Debug, PartialEq, Eq)]
pub enum Judged {
    /// Its sockets may hold this many of its range's ports (held, width).
    Held(u64, u64),
    /// Crowded under the default range with every TIME_WAIT socket counted, but
    /// its own range or `tcp_tw_reuse` is not read yet.
    NeedsALook,
    /// Nothing to go by (no `/proc/net/sockstat` read), or with
    /// `tcp_tw_reuse = 1` no connect rate yet (a first read).
    Unknown,
}

/// The ephemeral ports namespace `ns`'s TCP sockets may hold; `before` is its
/// previous sample and the seconds since.
pub fn judge(ns: &NetnsSample, before: Option<(&NetnsSample, f64)>) -> Judged {
    let Some(sockets) = ns.tcp_sockets else {
        return Judged::Unknown;
    };
    let Some(sysctls) = ns.netns_sysctls else {
        let (low, high) = DEFAULT_RANGE;
        let width = u64::from(high - low) + 1;
        let held = sockets.in_use + sockets.time_wait;
        return if held as f64 >= width as f64 * ARM_SHARE {
            Judged::NeedsALook
        } else {
            Judged::Held(held, width)
        };
    };
    let (low, high) = sysctls.ephemeral_ports.unwrap_or(DEFAULT_RANGE);
    let width = u64::from(high.saturating_sub(low)) + 1;
    let time_wait = match sysctls.tw_reuse {
        Some(1) => match opens_per_second(ns, before) {
            Some(opens) => sockets.time_wait.min(opens),
            None => return Judged::Unknown,
        },
        _ => sockets.time_wait,
    };
    Judged::Held(sockets.in_use + time_wait, width)
}

/// Connects opened per second lately (`ActiveOpens`), between the namespace's
/// last two reads of its files when it is not read every tick.
fn opens_per_second(ns: &NetnsSample, before: Option<(&NetnsSample, f64)>) -> Option<u64> {
    let now = ns.active_opens?;
    let (then, seconds) = match ns.files_before {
        Some((files, seconds)) => (files.active_opens?, seconds),
        None => {
            let (before, seconds) = before?;
            (before.active_opens?, seconds)
        }
    };
    (seconds > 0.0).then(|| (now.saturating_sub(then) as f64 / seconds).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sample::{NetnsSysctls, TcpSockets};

    /// A namespace with `in_use` and `time_wait` TCP sockets, range `range`,
    /// `tw_reuse`, and `opens` active opens so far.
    fn ns(
        in_use: u64,
        time_wait: u64,
        range: (u32, u32),
        tw_reuse: u32,
        opens: u64,
    ) -> NetnsSample {
        NetnsSample {
            tcp_sockets: Some(TcpSockets { in_use, time_wait }),
            netns_sysctls: Some(NetnsSysctls {
                ephemeral_ports: Some(range),
                tw_reuse: Some(tw_reuse),
                ..NetnsSysctls::default()
            }),
            active_opens: Some(opens),
            ..NetnsSample::default()
        }
    }

    fn sample(namespaces: Vec<(u32, NetnsSample)>) -> Sample {
        Sample {
            netns: namespaces.into_iter().collect(),
            ..Sample::default()
        }
    }

    #[test]
    fn time_wait_over_half_the_range_attaches_and_names_the_namespace() {
        let mut watch = PortWatch::default();
        let calm = sample(vec![(1, ns(10, 400, (40000, 40999), 2, 0))]);
        assert_eq!(watch.update(&calm, None), Verdict::default());
        assert!(!watch.armed);
        let crowded = sample(vec![
            (1, ns(10, 400, (40000, 40999), 2, 0)),
            (7, ns(10, 600, (40000, 40999), 2, 0)),
        ]);
        assert_eq!(
            watch.update(&crowded, None).newly_crowded,
            Some((7, 610, 1000))
        );
        assert!(watch.armed);
        // Still crowded: attached already, nothing new to say.
        assert_eq!(watch.update(&crowded, None), Verdict::default());
        assert!(watch.armed);
    }

    #[test]
    fn with_tw_reuse_only_the_last_seconds_time_wait_counts() {
        let mut watch = PortWatch::default();
        let range = (32768, 60999);
        // 12 000 connects a second, 40 000 in TIME_WAIT: 12 010 of 28 232 held.
        let before = sample(vec![(3, ns(10, 40_000, range, 1, 100_000))]);
        let now = sample(vec![(3, ns(10, 40_000, range, 1, 112_000))]);
        assert_eq!(
            judge(&now.netns[&3], Some((&before.netns[&3], 1.0))),
            Judged::Held(12_010, 28_232)
        );
        assert_eq!(watch.update(&now, Some((&before, 1.0))), Verdict::default());
        assert!(!watch.armed);
        // Reuse but no earlier read: no rate to judge by, not a reason to attach.
        assert_eq!(watch.update(&now, None), Verdict::default());
        assert!(!watch.armed);
        // The same sockets without reuse hold every port.
        let no_reuse = sample(vec![(3, ns(10, 40_000, range, 2, 112_000))]);
        assert_eq!(
            watch.update(&no_reuse, Some((&before, 1.0))).newly_crowded,
            Some((3, 40_010, 28_232))
        );
    }

    #[test]
    fn detaches_only_after_every_namespace_stayed_calm() {
        let mut watch = PortWatch::default();
        let crowded = sample(vec![(1, ns(0, 900, (40000, 40999), 2, 0))]);
        let middling = sample(vec![(1, ns(0, 300, (40000, 40999), 2, 0))]);
        let calm = sample(vec![(1, ns(0, 100, (40000, 40999), 2, 0))]);
        watch.update(&crowded, None);
        for _ in 0..CALM_TICKS - 1 {
            watch.update(&calm, None);
        }
        // Between the two shares: not calm, the count starts again.
        watch.update(&middling, None);
        for _ in 0..CALM_TICKS - 1 {
            watch.update(&calm, None);
            assert!(watch.armed);
        }
        watch.update(&calm, None);
        assert!(!watch.armed);
    }

    #[test]
    fn a_namespace_crowded_under_the_defaults_is_looked_at_before_it_is_judged() {
        let unlooked = |time_wait| NetnsSample {
            tcp_sockets: Some(TcpSockets {
                in_use: 5,
                time_wait,
            }),
            ..NetnsSample::default()
        };
        let mut watch = PortWatch::default();
        let verdict = watch.update(
            &sample(vec![(4, unlooked(14_200)), (5, unlooked(100))]),
            None,
        );
        assert_eq!(verdict.to_look_at, vec![4]);
        assert_eq!(verdict.newly_crowded, None);
        assert!(!watch.armed);
        assert_eq!(judge(&unlooked(100), None), Judged::Held(105, 28_232));
        assert_eq!(judge(&NetnsSample::default(), None), Judged::Unknown);
    }
}
