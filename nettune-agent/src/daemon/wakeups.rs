//! When urgent events may wake a collection, when the kernel should send them,
//! and which namespaces should not send them for now.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use nettune_common::{Event, events::QUIET_NAMESPACES};

/// When urgent events may trigger a collection, and when the kernel should send
/// them.
///
/// A wake-up collects at most once per `min_gap`; the others are counted and wait
/// for the next tick. Each event costs the kernel a ring-buffer wake-up, and the
/// kernel sends one only while its kind is armed (the sender disarms it), so the
/// loop arms the kinds only while an early collection could change something —
/// the tuner enforces — and after a collection an event triggered: again after
/// `min_gap` if it wrote a change (the pressure may still be growing), else only
/// at a later tick, and each fruitless wake-up in a row doubles the ticks
/// skipped (up to [`MAX_SKIPPED_TICKS`]): a firewall dropping packets all day is
/// not news to the tuner, and the tick still sees everything.
///
/// Backing off every kind punishes every namespace for one: the namespaces whose
/// events woke a collection in vain are instead made quiet for [`QUIET_FOR`]
/// (the kernel then sends nothing from them, even armed; it holds
/// [`QUIET_NAMESPACES`]), and the backoff only grows when a fruitless wake-up
/// came from a namespace there was no room to make quiet. A pod
/// whose firewall drops untracked packets all day then costs the kernel one
/// wake-up per [`QUIET_FOR`], and the others' events stay armed.
#[derive(Debug)]
pub struct EventWakeups {
    min_gap: Duration,
    last: Option<Instant>,
    /// When to arm the kinds again, if later than now.
    rearm_at: Option<Instant>,
    /// Fruitless event-triggered collections in a row.
    fruitless: u32,
    /// Tick collections still to pass before arming again.
    skip_ticks: u32,
    /// Wake-ups that did not collect.
    pub suppressed: u64,
    /// Namespaces of the events since the last collection.
    senders: BTreeSet<u32>,
    /// Quiet namespaces, until when.
    quiet: BTreeMap<u32, Instant>,
    /// Whether `quiet` changed since [`Self::quieting`] was last asked.
    changed: bool,
}

/// How long the namespace of an event that woke a collection in vain stays
/// quiet. The tick still reads it; a table that fills there is seen on the next
/// tick rather than at once.
pub const QUIET_FOR: Duration = Duration::from_secs(600);

/// Most ticks a run of fruitless wake-ups makes the events wait.
pub const MAX_SKIPPED_TICKS: u32 = 63;

/// What to do with the kernel's urgent events after a collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arming {
    /// Arm every kind now.
    Arm,
    /// Disarm every kind.
    Disarm,
    /// Leave them disarmed for now ([`EventWakeups::due`] says when).
    Later,
}

impl EventWakeups {
    /// At most one event-triggered collection per `min_gap`.
    pub fn new(min_gap: Duration) -> Self {
        Self {
            min_gap,
            last: None,
            rearm_at: None,
            fruitless: 0,
            skip_ticks: 0,
            suppressed: 0,
            senders: BTreeSet::new(),
            quiet: BTreeMap::new(),
            changed: false,
        }
    }

    /// Events taken from the ring: who sent them.
    pub fn note_events(&mut self, events: &[Event]) {
        self.senders.extend(events.iter().map(|e| e.netns));
    }

    /// Makes the senders of a fruitless wake-up quiet, as far as there is room;
    /// whether every one of them was (none is not).
    fn quiet_senders(&mut self, now: Instant) -> bool {
        let senders = std::mem::take(&mut self.senders);
        let mut all = !senders.is_empty();
        for sender in senders {
            if self.quiet.contains_key(&sender) {
                continue;
            }
            if self.quiet.len() >= QUIET_NAMESPACES {
                all = false;
                continue;
            }
            self.quiet.insert(sender, now + QUIET_FOR);
            self.changed = true;
        }
        all
    }

    /// The quiet namespaces at `now`, if they changed since last asked (those
    /// quiet for [`QUIET_FOR`] are heard from again).
    pub fn quieting(&mut self, now: Instant) -> Option<Vec<u32>> {
        let before = self.quiet.len();
        self.quiet.retain(|_, until| now < *until);
        let changed = std::mem::take(&mut self.changed) || self.quiet.len() != before;
        changed.then(|| self.quiet.keys().copied().collect())
    }

    /// After a collection at `now`, triggered by an event or not, that wrote a
    /// change (`applied`) or not, by an engine that `acts` on urgent events or
    /// not: what to do with the kernel's events.
    pub fn after_collection(
        &mut self,
        now: Instant,
        by_event: bool,
        applied: bool,
        acts: bool,
    ) -> Arming {
        self.rearm_at = None;
        if !acts {
            self.senders.clear();
            return Arming::Disarm;
        }
        if !by_event || applied {
            self.senders.clear();
        }
        match (by_event, applied) {
            (false, _) if self.skip_ticks > 0 => {
                self.skip_ticks -= 1;
                Arming::Later
            }
            (false, _) => Arming::Arm,
            (true, true) => {
                self.fruitless = 0;
                self.rearm_at = Some(now + self.min_gap);
                Arming::Later
            }
            (true, false) if self.quiet_senders(now) => Arming::Later,
            (true, false) => {
                // 0, 1, 3, 7, … ticks skipped after 1, 2, 3, 4, … in a row.
                self.skip_ticks = (1u32 << self.fruitless.min(6)) - 1;
                self.skip_ticks = self.skip_ticks.min(MAX_SKIPPED_TICKS);
                self.fruitless = self.fruitless.saturating_add(1);
                Arming::Later
            }
        }
    }

    /// Whether a re-arm planned by [`Self::after_collection`] is due at `now`
    /// (it is then done).
    pub fn due(&mut self, now: Instant) -> bool {
        if self.rearm_at.is_some_and(|at| now >= at) {
            self.rearm_at = None;
            return true;
        }
        false
    }

    /// Events arrived at `now`: whether to collect now.
    pub fn on_events(&mut self, now: Instant) -> bool {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.min_gap => {
                self.suppressed += 1;
                false
            }
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_events_collects_at_most_once_per_gap_and_counts_the_rest() {
        let mut w = EventWakeups::new(Duration::from_millis(100));
        let t0 = Instant::now();
        let collected: Vec<bool> = (0..10)
            .map(|i| w.on_events(t0 + Duration::from_millis(i * 30)))
            .collect();
        // t = 0, 120 and 240 ms collect; the seven in between wait.
        assert_eq!(
            collected,
            [
                true, false, false, false, true, false, false, false, true, false
            ]
        );
        assert_eq!(w.suppressed, 7);
        let mut w = EventWakeups::new(Duration::ZERO);
        assert!((0..5).all(|_| w.on_events(t0)));
    }

    #[test]
    fn events_are_armed_only_while_an_early_collection_could_write() {
        let mut w = EventWakeups::new(Duration::from_millis(100));
        let t0 = Instant::now();
        // Observing or advising: the kernel sends nothing.
        assert_eq!(w.after_collection(t0, false, false, false), Arming::Disarm);
        // Enforcing: armed at every tick.
        assert_eq!(w.after_collection(t0, false, false, true), Arming::Arm);
        // An event that led to a write: armed again after the gap.
        assert_eq!(w.after_collection(t0, true, true, true), Arming::Later);
        assert!(!w.due(t0 + Duration::from_millis(50)));
        assert!(w.due(t0 + Duration::from_millis(100)));
        assert!(!w.due(t0 + Duration::from_millis(150)), "once");
        // An event that changed nothing: not before the next tick.
        assert_eq!(w.after_collection(t0, true, false, true), Arming::Later);
        assert!(!w.due(t0 + Duration::from_secs(60)));
        assert_eq!(w.after_collection(t0, false, false, true), Arming::Arm);
        // Fruitless again and again: the ticks skipped double, up to a bound.
        let ticks_until_armed = |w: &mut EventWakeups| {
            assert_eq!(w.after_collection(t0, true, false, true), Arming::Later);
            (1..)
                .find(|_| w.after_collection(t0, false, false, true) == Arming::Arm)
                .unwrap()
        };
        let waits: Vec<u32> = (0..9).map(|_| ticks_until_armed(&mut w)).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 64, 64, 64]);
        // A useful one starts over.
        assert_eq!(w.after_collection(t0, true, true, true), Arming::Later);
        assert_eq!(ticks_until_armed(&mut w), 1);
    }

    fn event(kind: u32, netns: u32) -> Event {
        Event {
            kind,
            netns,
            ..Event::default()
        }
    }

    #[test]
    fn the_namespace_of_a_fruitless_wake_up_is_made_quiet_and_others_stay_armed() {
        let mut w = EventWakeups::new(Duration::from_millis(100));
        let t0 = Instant::now();
        assert_eq!(w.after_collection(t0, false, false, true), Arming::Arm);
        // Namespace 7's firewall drops untracked packets: its event changed nothing.
        w.note_events(&[event(1, 7), event(1, 7)]);
        assert_eq!(w.after_collection(t0, true, false, true), Arming::Later);
        assert_eq!(w.quieting(t0), Some(vec![7]));
        assert_eq!(w.quieting(t0), None, "told once");
        // The kinds are armed again at the next tick, not after a backoff: the
        // namespace that woke in vain is quiet, the others may still matter.
        assert_eq!(w.after_collection(t0, false, false, true), Arming::Arm);
        // Another namespace's fruitless event: quiet too, still no backoff.
        w.note_events(&[event(2, 8)]);
        assert_eq!(w.after_collection(t0, true, false, true), Arming::Later);
        assert_eq!(w.after_collection(t0, false, false, true), Arming::Arm);
        assert_eq!(w.quieting(t0), Some(vec![7, 8]));
        // Until QUIET_FOR has passed.
        assert_eq!(w.quieting(t0 + QUIET_FOR / 2), None);
        assert_eq!(w.quieting(t0 + QUIET_FOR), Some(vec![]));
    }

    #[test]
    fn a_useful_wake_up_makes_no_namespace_quiet() {
        let mut w = EventWakeups::new(Duration::from_millis(100));
        let t0 = Instant::now();
        w.note_events(&[event(1, 7)]);
        assert_eq!(w.after_collection(t0, true, true, true), Arming::Later);
        assert_eq!(w.quieting(t0), None);
        // Events noted before a tick's collection judge no one either.
        w.note_events(&[event(1, 9)]);
        assert_eq!(w.after_collection(t0, false, false, true), Arming::Arm);
        w.note_events(&[]);
        assert_eq!(w.after_collection(t0, true, false, true), Arming::Later);
        assert_eq!(w.quieting(t0), None);
    }

    #[test]
    fn past_the_kernels_room_for_quiet_namespaces_every_kind_backs_off() {
        let mut w = EventWakeups::new(Duration::ZERO);
        let t0 = Instant::now();
        let room = QUIET_NAMESPACES as u32;
        let senders: Vec<Event> = (0..room).map(|n| event(1, n)).collect();
        w.note_events(&senders);
        assert_eq!(w.after_collection(t0, true, false, true), Arming::Later);
        assert_eq!(w.quieting(t0).map(|q| q.len()), Some(QUIET_NAMESPACES));
        assert_eq!(w.after_collection(t0, false, false, true), Arming::Arm);
        // One more noisy namespace, no room: the old backoff (a tick skipped).
        w.note_events(&[event(1, room)]);
        assert_eq!(w.after_collection(t0, true, false, true), Arming::Later);
        assert_eq!(w.quieting(t0), None);
        assert_eq!(w.after_collection(t0, false, false, true), Arming::Arm);
        w.note_events(&[event(1, room)]);
        assert_eq!(w.after_collection(t0, true, false, true), Arming::Later);
        assert_eq!(w.after_collection(t0, false, false, true), Arming::Later);
        assert_eq!(w.after_collection(t0, false, false, true), Arming::Arm);
    }
}
