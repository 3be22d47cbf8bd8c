//! Finding tracefs and reading tracepoint format files.
//!
//! Classic tracepoints need tracefs twice: aya resolves the event id through it, and
//! the program needs the byte offsets of the record's fields, which the kernel
//! publishes in `events/<category>/<name>/format`. tracefs is normally at
//! `/sys/kernel/tracing`; older setups only have it under debugfs. When neither is
//! mounted the agent mounts it (root only) and says so.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    path::{Path, PathBuf},
};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Errors locating tracefs or reading a format file.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    /// No tracefs is mounted, and mounting one failed.
    #[error("tracefs unavailable: {reason}")]
    NotMounted {
        /// Why.
        reason: String,
    },
    /// A format file could not be read (e.g. the event does not exist).
    #[error("cannot read tracepoint format {path}: {source}")]
    Format {
        /// The format file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The event's record has no such field on this kernel.
    #[error("tracepoint {event} has no field `{field}`")]
    NoField {
        /// `category/name`.
        event: String,
        /// The field.
        field: String,
    },
}

/// A mounted tracefs.
#[derive(Clone, Debug)]
pub struct Tracefs {
    root: PathBuf,
}

/// Where a field sits in a tracepoint record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Byte offset in the record.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

impl Tracefs {
    /// Finds a mounted tracefs, mounting it at `/sys/kernel/tracing` if none is.
    pub fn find_or_mount() -> Result<Self, TracefsError> {
        if let Some(found) = Self::find() {
            return Ok(found);
        }
        let target = CANDIDATES[0];
        let status = std::process::Command::new("mount")
            .args(["-t", "tracefs", "tracefs", target])
            .output();
        match status {
            Ok(out) if out.status.success() => {
                log::info!("mounted tracefs at {target} (it was not mounted)");
                Self::find().ok_or_else(|| TracefsError::NotMounted {
                    reason: "mount succeeded but no events directory appeared".into(),
                })
            }
            Ok(out) => Err(TracefsError::NotMounted {
                reason: format!(
                    "not mounted, and `mount -t tracefs tracefs {target}` failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            }),
            Err(e) => Err(TracefsError::NotMounted {
                reason: format!("not mounted, and running mount failed: {e}"),
            }),
        }
    }

    /// Finds a mounted tracefs without changing anything.
    pub fn find() -> Option<Self> {
        CANDIDATES
            .iter()
            .map(Path::new)
            .find(|p| p.join("events").is_dir())
            .map(|p| Self {
                root: p.to_path_buf(),
            })
    }

    /// Uses `root` as tracefs if it has an `events` directory.
    pub fn at_checked(root: &Path) -> Result<Self, TracefsError> {
        if root.join("events").is_dir() {
            Ok(Self::at(root))
        } else {
            Err(TracefsError::NotMounted {
                reason: format!("{} has no events directory", root.display()),
            })
        }
    }

    /// Uses `root` as tracefs (tests point this at a directory of fixtures).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The raw format file of `category/name`.
    pub fn format_text(&self, category: &str, name: &str) -> Result<String, TracefsError> {
        let path = self
            .root
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        fs::read_to_string(&path).map_err(|source| TracefsError::Format { path, source })
    }

    /// The fields of `category/name`'s record, by name.
    pub fn format(
        &self,
        category: &str,
        name: &str,
    ) -> Result<HashMap<String, Field>, TracefsError> {
        Ok(parse_format(&self.format_text(category, name)?))
    }

    /// Offset of one field of `category/name`.
    pub fn field(&self, category: &str, name: &str, field: &str) -> Result<Field, TracefsError> {
        self.format(category, name)?
            .remove(field)
            .ok_or_else(|| TracefsError::NoField {
                event: format!("{category}/{name}"),
                field: field.to_owned(),
            })
    }
}

/// Parses the `field:` lines of a format file:
/// `field:const void * skaddr;<TAB>offset:16;<TAB>size:8;<TAB>signed:0;`
pub fn parse_format(text: &str) -> HashMap<String, Field> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("field:") else {
            continue;
        };
        let mut parts = rest.split(';').map(str::trim);
        let Some(decl) = parts.next() else { continue };
        // The name is the last word of the declaration, minus any array suffix.
        let Some(name) = decl.split_whitespace().last() else {
            continue;
        };
        let name = name.split('[').next().unwrap_or(name);
        let mut offset = None;
        let mut size = None;
        for part in parts {
            if let Some(v) = part.strip_prefix("offset:") {
                offset = v.parse().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.parse().ok();
            }
        }
        if let (Some(offset), Some(size)) = (offset, size) {
            fields.insert(name.to_owned(), Field { offset, size });
        }
    }
    fields
}

/// Parses the drop reason table of the `skb/kfree_skb` format:
/// `__print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, ...)`.
pub fn parse_print_symbolic(format: &str) -> Option<BTreeMap<u32, String>> {
    let start = format.find("__print_symbolic(REC->reason")?;
    let mut names = BTreeMap::new();
    for pair in format[start..].split('{').skip(1) {
        let Some((body, _)) = pair.split_once('}') else {
            continue;
        };
        let Some((value, name)) = body.split_once(',') else {
            continue;
        };
        let (Ok(value), name) = (value.trim().parse::<u32>(), name.trim().trim_matches('"')) else {
            continue;
        };
        names.insert(value, name.to_owned());
    }
    (!names.is_empty()).then_some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reason_names_from_the_format() {
        let format = r#"print fmt: "reason: %s", __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 73, "TC_INGRESS" })"#;
        let names = parse_print_symbolic(format).unwrap();
        assert_eq!(names.get(&73).map(String::as_str), Some("TC_INGRESS"));
        assert_eq!(names.len(), 3);
        assert!(parse_print_symbolic("print fmt: \"%d\", REC->x").is_none());
    }

    const RETRANSMIT_FORMAT: &str = "name: tcp_retransmit_skb
ID: 2281
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:42;\tsize:16;\tsigned:0;
\tfield:int err;\toffset:76;\tsize:4;\tsigned:1;

print fmt: \"skbaddr=%p\", REC->skbaddr
";

    #[test]
    fn parses_pointer_array_and_int_fields() {
        let fields = parse_format(RETRANSMIT_FORMAT);
        assert_eq!(
            fields["skaddr"],
            Field {
                offset: 16,
                size: 8
            }
        );
        assert_eq!(fields["skbaddr"], Field { offset: 8, size: 8 });
        assert_eq!(
            fields["saddr_v6"],
            Field {
                offset: 42,
                size: 16
            }
        );
        assert_eq!(
            fields["err"],
            Field {
                offset: 76,
                size: 4
            }
        );
        assert!(!fields.contains_key("print"));
    }

    #[test]
    fn missing_field_and_file_are_named() {
        let dir = std::env::temp_dir().join(format!("nettune-tracefs-{}", std::process::id()));
        let event = dir.join("events/tcp/tcp_retransmit_skb");
        fs::create_dir_all(&event).unwrap();
        fs::write(event.join("format"), RETRANSMIT_FORMAT).unwrap();
        let tracefs = Tracefs::at(&dir);
        assert_eq!(
            tracefs
                .field("tcp", "tcp_retransmit_skb", "sport")
                .unwrap_err()
                .to_string(),
            "tracepoint tcp/tcp_retransmit_skb has no field `sport`"
        );
        let err = tracefs.field("tcp", "nope", "x").unwrap_err();
        assert!(
            err.to_string().starts_with("cannot read tracepoint format"),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
