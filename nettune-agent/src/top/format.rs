//! Number formatting for the terminal: short, fixed-width-friendly.

/// A per-second rate: `0`, `0.5`, `12`, `3.4k`, `1.2M`.
pub fn rate(v: f64) -> String {
    if v <= 0.0 {
        "0".into()
    } else if v < 10.0 {
        format!("{v:.1}")
    } else if v < 10_000.0 {
        format!("{v:.0}")
    } else if v < 10_000_000.0 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{:.1}M", v / 1e6)
    }
}

/// Bytes per second with a binary unit: `512B`, `3.2K`, `1.5M`, `2.0G`.
pub fn bytes_rate(v: f64) -> String {
    const UNITS: [&str; 4] = ["B", "K", "M", "G"];
    let mut v = v.max(0.0);
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0}B")
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

/// Uptime as `3d4h`, `2h5m`, `4m10s`, `9s`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// A queue's fill as a bar of `width` cells and `queue/limit`: `█████░░░ 4/8`.
/// A full queue fills the bar (the kernel admits one more than the limit).
pub fn queue_bar(queue: u32, limit: u32, width: usize) -> String {
    let ratio = (f64::from(queue) / f64::from(limit.max(1))).min(1.0);
    let filled = (ratio * width as f64).round() as usize;
    format!(
        "{}{} {queue}/{limit}",
        "█".repeat(filled),
        "░".repeat(width - filled)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(-1.0), "0");
        assert_eq!(rate(2.345), "2.3");
        assert_eq!(rate(123.4), "123");
        assert_eq!(rate(45_678.0), "45.7k");
        assert_eq!(rate(f64::MAX), format!("{:.1}M", f64::MAX / 1e6));
        assert_eq!(bytes_rate(500.0), "500B");
        assert_eq!(bytes_rate(1536.0), "1.5K");
        assert_eq!(
            bytes_rate(3.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
            "3072.0G"
        );
        assert_eq!(duration(9.0), "9s");
        assert_eq!(duration(250.0), "4m10s");
        assert_eq!(duration(7500.0), "2h5m");
        assert_eq!(duration(277_200.0), "3d5h");
        assert_eq!(queue_bar(4, 8, 8), "████░░░░ 4/8");
        assert_eq!(queue_bar(9, 8, 4), "████ 9/8");
        assert_eq!(queue_bar(0, 0, 2), "░░ 0/0");
    }
}
