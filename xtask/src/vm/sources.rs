//! The Debian archives the system's apt sources name: deb822
//! (`/etc/apt/sources.list.d/*.sources`) and one-line (`/etc/apt/sources.list`).

use anyhow::Context as _;

/// The Debian archive and its security archive, as the system's apt sources name
/// them.
#[derive(Debug, PartialEq, Eq)]
pub struct Archives {
    /// The Debian archive.
    pub main: String,
    /// Its security archive.
    pub security: String,
}

impl Archives {
    /// From `/etc/apt/sources.list.d/*.sources` (deb822) and
    /// `/etc/apt/sources.list` (one-line format).
    pub fn from_system() -> anyhow::Result<Self> {
        let mut entries = Vec::new();
        if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
            for entry in dir.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "sources") {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    entries.extend(parse_deb822(&text));
                }
            }
        }
        if let Ok(text) = std::fs::read_to_string("/etc/apt/sources.list") {
            entries.extend(parse_one_line(&text));
        }
        Self::from_entries(&entries)
    }

    /// The first archive with a plain suite, and the first with a `-security` one.
    fn from_entries(entries: &[(String, String)]) -> anyhow::Result<Self> {
        let find = |security: bool| {
            entries
                .iter()
                .find(|(_, suite)| suite.ends_with("-security") == security)
                .map(|(uri, _)| uri.trim_end_matches('/').to_owned())
        };
        Ok(Self {
            main: find(false).context(
                "the system's apt sources name no Debian archive (looked in \
                 /etc/apt/sources.list.d/*.sources and /etc/apt/sources.list)",
            )?,
            security: find(true).context(
                "the system's apt sources name no security archive: the newest 6.1 \
                 and every 6.12 kernel package are only in bookworm-security",
            )?,
        })
    }
}

/// (URI, suite) pairs of `deb` stanzas in a deb822 sources file.
fn parse_deb822(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
                .unwrap_or_default()
        };
        if !field("Types").split_whitespace().any(|t| t == "deb") || field("Enabled") == "no" {
            continue;
        }
        for uri in field("URIs").split_whitespace() {
            for suite in field("Suites").split_whitespace() {
                out.push((uri.to_owned(), suite.to_owned()));
            }
        }
    }
    out
}

/// (URI, suite) pairs of `deb` lines in a one-line-format sources.list.
fn parse_one_line(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("deb ")?;
            // Options in brackets come before the URI.
            let rest = match rest.trim_start().strip_prefix('[') {
                Some(options) => options.split_once(']')?.1,
                None => rest,
            };
            let mut words = rest.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_come_from_deb822_and_one_line_sources() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm \
                      bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: \
                      http://deb.debian.org/debian-security/\nSuites: bookworm-security\n";
        let archives = Archives::from_entries(&parse_deb822(deb822)).unwrap();
        assert_eq!(
            archives,
            Archives {
                main: "http://deb.debian.org/debian".into(),
                security: "http://deb.debian.org/debian-security".into(),
            }
        );
        let one_line = "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://m/debian bookworm \
                        main\ndeb http://s/debian-security bookworm-security main\n";
        let archives = Archives::from_entries(&parse_one_line(one_line)).unwrap();
        assert_eq!(archives.main, "http://m/debian");
        assert_eq!(archives.security, "http://s/debian-security");
        let err = Archives::from_entries(&parse_one_line("deb http://m/debian bookworm main"))
            .unwrap_err();
        assert!(err.to_string().contains("security archive"), "{err}");
    }
}
