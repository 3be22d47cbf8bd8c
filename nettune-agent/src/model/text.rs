//! Text any process can choose — a `comm` (`prctl(PR_SET_NAME)`), a
//! `/run/netns` name, a value written to a sysctl, a runtime's pod name — made
//! safe to print before it reaches a label, a log line or a decision's reason:
//! control characters are escaped, so a pod cannot move the cursor of the
//! terminal that shows `nettune top` or forge a log line with a newline.

/// `raw` with every control character escaped (`\n`, `\u{1b}`, …); other text,
/// any script, as it is.
pub fn printable(raw: &str) -> String {
    if !raw.chars().any(char::is_control) {
        return raw.to_owned();
    }
    raw.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().collect()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A NUL-terminated buffer from the kernel (a `comm`, a sysctl's name or value)
/// as printable text; bytes that are not UTF-8 become U+FFFD.
pub fn printable_c(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    printable(&String::from_utf8_lossy(&bytes[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(printable("nginx"), "nginx");
        assert_eq!(printable("wörker-1"), "wörker-1");
        assert_eq!(
            printable("\u{1b}[2Jevil\nnettune: ok"),
            "\\u{1b}[2Jevil\\nnettune: ok"
        );
        assert_eq!(printable_c(b"a\tb\0garbage"), "a\\tb");
        assert_eq!(printable_c(b"\xff\x07"), "\u{fffd}\\u{7}");
    }
}
