//! A logger for tests: the lines each test thread logged, installed once per
//! test process (unit tests install no other logger).

use std::cell::RefCell;

thread_local! {
    static LINES: RefCell<Vec<(log::Level, String)>> = const { RefCell::new(Vec::new()) };
}

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        LINES.with(|l| {
            l.borrow_mut()
                .push((record.level(), record.args().to_string()));
        });
    }

    fn flush(&self) {}
}

/// The lines logged on this thread since the last call.
pub fn take() -> Vec<(log::Level, String)> {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&Capture).expect("no other logger in unit tests");
        log::set_max_level(log::LevelFilter::Trace);
    });
    LINES.with(RefCell::take)
}

/// How many warnings said a decision failed.
pub fn failures(lines: &[(log::Level, String)]) -> usize {
    lines
        .iter()
        .filter(|(level, line)| *level == log::Level::Warn && line.contains("[failed]"))
        .count()
}
