//! How long and how often the sections measure.

/// How long and how often to measure.
#[derive(Clone, Copy)]
pub struct Mode {
    /// `--quick`: fewer repetitions, shorter windows.
    pub quick: bool,
}

impl Mode {
    /// `quick` in quick mode, else `full`.
    pub fn pick<T>(self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }
}
