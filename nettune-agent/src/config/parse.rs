//! Reading a config file against the key table: every value is checked by its
//! key's [`Kind`], and every problem is reported as the file, the line, the key
//! and the reason, in one format.

use std::{collections::BTreeMap, ops::Range, path::PathBuf};

use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

use super::{
    Config, ConfigError, Limit,
    keys::{self, Bounds, Key, Kind},
};
use crate::model::{probes::Variant, tunables, tuning::Mode, value::PortList};

/// A problem at a place in the file.
struct Problem {
    span: Range<usize>,
    key: String,
    reason: String,
}

type Checked<T> = Result<T, Problem>;

impl Problem {
    fn at(span: Range<usize>, key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            span,
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The dotted key at byte `offset` (for syntax errors, which come without one):
/// the key on that line, under the last table header above it (or the header
/// itself when the offset is on one).
fn key_at(text: &str, offset: usize) -> String {
    let line_no = line_of(text, offset);
    let lines: Vec<&str> = text.lines().collect();
    let line = lines.get(line_no - 1).map_or("", |l| l.trim());
    let header = |l: &str| {
        l.strip_prefix('[')
            .map(|l| l.trim_end_matches(']'))
            .map(|h| h.trim_matches(['[', ']']).trim().to_owned())
    };
    if let Some(h) = header(line) {
        return h;
    }
    let key = line.split('=').next().unwrap_or("").trim();
    let section = lines[..line_no - 1]
        .iter()
        .rev()
        .find_map(|l| header(l.trim()));
    match section {
        Some(s) if !s.is_empty() => format!("{s}.{key}"),
        _ => key.to_owned(),
    }
}

/// How a value looks, for "wrong type" messages.
fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => format!("string \"{s}\""),
        DeValue::Integer(i) => format!("integer `{i}`"),
        DeValue::Float(f) => format!("floating point `{f}`"),
        DeValue::Boolean(b) => format!("boolean `{b}`"),
        DeValue::Datetime(d) => format!("datetime `{d}`"),
        DeValue::Array(_) => "a list".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}

/// What a kind expects, for "wrong type" messages.
fn expected(kind: &Kind) -> &'static str {
    match kind {
        Kind::Number(..) => "a number",
        Kind::Whole(..) => "a whole number",
        Kind::Switch(_) => "true or false",
        Kind::Address(_) | Kind::Path(_) | Kind::MaybePath(_) | Kind::MaybeText(_) => "a string",
        Kind::Mode(_) => "a string",
        Kind::Variants(_) | Kind::Sysctls(..) | Kind::Ports(_) | Kind::Texts(_) => {
            "a list of strings"
        }
        Kind::Limits(_) => "a table",
    }
}

/// `unknown key (expected one of: a, b)`.
fn unknown(choices: &[&str]) -> String {
    format!("unknown key (expected one of: {})", choices.join(", "))
}

fn wrong_type(value: &DeValue<'_>, wanted: &str) -> String {
    format!("wrong type: found {}, expected {wanted}", describe(value))
}

fn out_of_range<T: std::fmt::Display>(value: T, b: &Bounds<T>) -> String {
    format!(
        "{value} is out of range: must be between {} and {}{}",
        b.min, b.max, b.unit
    )
}

/// `value` as an f64, if it is a number.
fn as_number(value: &DeValue<'_>) -> Option<f64> {
    match value {
        DeValue::Float(f) => f.as_str().replace('_', "").parse().ok(),
        DeValue::Integer(i) => as_integer_text(i.as_str()).map(|i| i as f64),
        _ => None,
    }
}

/// An integer literal (decimal, hex, octal, binary, with `_`).
fn as_integer_text(text: &str) -> Option<i128> {
    let t = text.replace('_', "");
    let (negative, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest.to_owned()),
        None => (false, t.trim_start_matches('+').to_owned()),
    };
    let n = if let Some(h) = t.strip_prefix("0x") {
        i128::from_str_radix(h, 16).ok()?
    } else if let Some(o) = t.strip_prefix("0o") {
        i128::from_str_radix(o, 8).ok()?
    } else if let Some(b) = t.strip_prefix("0b") {
        i128::from_str_radix(b, 2).ok()?
    } else {
        t.parse().ok()?
    };
    Some(if negative { -n } else { n })
}

/// A value the key's kind refuses.
#[derive(Debug, thiserror::Error)]
enum Refused {
    /// Not the type the key takes.
    #[error("wrong type: found {found}, expected {wanted}")]
    WrongType {
        /// What the value is.
        found: String,
        /// What the key takes.
        wanted: &'static str,
    },
    /// Outside the key's bounds.
    #[error(transparent)]
    OutOfRange(#[from] OutOfRange),
}

/// A checked whole number.
fn whole(value: &DeValue<'_>, b: &Bounds<u64>) -> Result<u64, Refused> {
    let wrong = || Refused::WrongType {
        found: describe(value),
        wanted: "a whole number",
    };
    let DeValue::Integer(i) = value else {
        return Err(wrong());
    };
    let n = as_integer_text(i.as_str()).ok_or_else(wrong)?;
    u64::try_from(n)
        .ok()
        .filter(|n| (b.min..=b.max).contains(n))
        .ok_or_else(|| {
            let wide = Bounds {
                min: i128::from(b.min),
                max: i128::from(b.max),
                unit: b.unit,
            };
            OutOfRange(out_of_range(n, &wide)).into()
        })
}

/// Checks a number against `b` (the config file and `--interval` share it).
pub fn check_number(x: f64, b: &Bounds<f64>) -> Result<f64, OutOfRange> {
    if x.is_finite() && (b.min..=b.max).contains(&x) {
        Ok(x)
    } else {
        Err(OutOfRange(out_of_range(x, b)))
    }
}

/// A number outside its key's bounds; says which bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OutOfRange(String);

/// The strings of a list, each with its span.
fn strings<'a>(value: &'a Spanned<DeValue<'a>>, key: &str) -> Checked<Vec<(String, Range<usize>)>> {
    let DeValue::Array(items) = value.get_ref() else {
        return Err(Problem::at(
            value.span(),
            key,
            wrong_type(value.get_ref(), "a list of strings"),
        ));
    };
    items
        .iter()
        .map(|item| match item.get_ref() {
            DeValue::String(s) => Ok((s.to_string(), item.span())),
            other => Err(Problem::at(
                item.span(),
                key,
                wrong_type(other, "a list of strings"),
            )),
        })
        .collect()
}

/// A string value.
fn string<'a>(value: &'a Spanned<DeValue<'a>>, key: &str) -> Checked<&'a str> {
    match value.get_ref() {
        DeValue::String(s) => Ok(s),
        other => Err(Problem::at(
            value.span(),
            key,
            wrong_type(other, "a string"),
        )),
    }
}

/// Applies one key's value to `config`.
fn apply(config: &mut Config, key: &Key, value: &Spanned<DeValue<'_>>) -> Checked<()> {
    let name = key.name;
    let here = |reason: String| Problem::at(value.span(), name, reason);
    match key.kind {
        Kind::Number(b, field) => {
            let x = as_number(value.get_ref())
                .ok_or_else(|| here(wrong_type(value.get_ref(), expected(&key.kind))))?;
            *field(config) = check_number(x, &b).map_err(|e| here(e.to_string()))?;
        }
        Kind::Whole(b, field) => {
            *field(config) = whole(value.get_ref(), &b).map_err(|e| here(e.to_string()))?;
        }
        Kind::Switch(field) => match value.get_ref() {
            DeValue::Boolean(b) => *field(config) = *b,
            other => return Err(here(wrong_type(other, expected(&key.kind)))),
        },
        Kind::Address(field) => {
            let text = string(value, name)?;
            *field(config) = text
                .parse()
                .map_err(|e| here(format!("`{text}` is not an address:port ({e})")))?;
        }
        Kind::Path(field) => {
            let text = string(value, name)?;
            // A daemon's working directory is no place to look for anything.
            if !text.starts_with('/') {
                return Err(here(format!("`{text}` is not an absolute path")));
            }
            *field(config) = PathBuf::from(text);
        }
        Kind::MaybePath(field) => *field(config) = Some(PathBuf::from(string(value, name)?)),
        Kind::MaybeText(field) => *field(config) = Some(string(value, name)?.to_owned()),
        Kind::Mode(field) => {
            let text = string(value, name)?;
            *field(config) = Mode::ALL
                .into_iter()
                .find(|m| m.name() == text)
                .ok_or_else(|| {
                    let all: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
                    here(format!(
                        "unknown mode `{text}` (expected one of: {})",
                        all.join(", ")
                    ))
                })?;
        }
        Kind::Variants(field) => {
            let mut out = Vec::new();
            for (text, span) in strings(value, name)? {
                let variant = Variant::ALL
                    .into_iter()
                    .find(|v| v.name() == text)
                    .ok_or_else(|| {
                        let all: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
                        Problem::at(
                            span,
                            name,
                            format!(
                                "unknown variant `{text}` (expected one of: {})",
                                all.join(", ")
                            ),
                        )
                    })?;
                out.push(variant);
            }
            *field(config) = out;
        }
        Kind::Sysctls(field, admits) => {
            let mut out = Vec::new();
            for (text, span) in strings(value, name)? {
                let spec = tunables::lookup(&text)
                    .map_err(|e| Problem::at(span.clone(), name, e.to_string()))?;
                admits(spec).map_err(|why| Problem::at(span, name, format!("{text}: {why}")))?;
                out.push(text);
            }
            *field(config) = out;
        }
        Kind::Ports(field) => {
            let mut out = Vec::new();
            for (text, span) in strings(value, name)? {
                if PortList::parse(&text).is_none_or(|p| p.to_string().is_empty()) {
                    return Err(Problem::at(
                        span,
                        name,
                        format!("`{text}` is not a port or a port range like 30000-32767"),
                    ));
                }
                out.push(text);
            }
            *field(config) = out;
        }
        Kind::Texts(field) => {
            *field(config) = strings(value, name)?.into_iter().map(|(t, _)| t).collect();
        }
        Kind::Limits(field) => *field(config) = limits(name, value)?,
    }
    Ok(())
}

/// `tuning.limits`: per allow-listed sysctl, a floor and a ceiling on its scale.
fn limits(name: &str, value: &Spanned<DeValue<'_>>) -> Checked<BTreeMap<String, Limit>> {
    let DeValue::Table(table) = value.get_ref() else {
        return Err(Problem::at(
            value.span(),
            name,
            wrong_type(value.get_ref(), "a table"),
        ));
    };
    let mut out = BTreeMap::new();
    for (sysctl, bounds) in table {
        let key = format!("{name}.\"{}\"", sysctl.get_ref());
        let spec = tunables::lookup(sysctl.get_ref())
            .map_err(|e| Problem::at(sysctl.span(), &key, e.to_string()))?;
        let most = spec.most_room().ok_or_else(|| {
            Problem::at(
                sysctl.span(),
                &key,
                "is a setting, not room: nettune never raises it, so it takes no limits",
            )
        })?;
        let DeValue::Table(fields) = bounds.get_ref() else {
            return Err(Problem::at(
                bounds.span(),
                &key,
                wrong_type(bounds.get_ref(), "a table with floor and ceiling"),
            ));
        };
        let range = Bounds {
            min: 0,
            max: most,
            unit: ", the most the kernel accepts",
        };
        let mut limit = Limit::default();
        let mut ceiling_span = None;
        for (field, v) in fields {
            let field_key = format!("{key}.{}", field.get_ref());
            let slot = match field.get_ref().as_ref() {
                "floor" => &mut limit.floor,
                "ceiling" => {
                    ceiling_span = Some(v.span());
                    &mut limit.ceiling
                }
                _ => {
                    return Err(Problem::at(
                        field.span(),
                        field_key,
                        unknown(&["floor", "ceiling"]),
                    ));
                }
            };
            *slot = Some(
                whole(v.get_ref(), &range)
                    .map_err(|r| Problem::at(v.span(), field_key, r.to_string()))?,
            );
        }
        if let (Some(f), Some(c), Some(span)) = (limit.floor, limit.ceiling, ceiling_span)
            && c < f
        {
            return Err(Problem::at(
                span,
                format!("{key}.ceiling"),
                format!("{c} is below the floor {f}"),
            ));
        }
        out.insert(sysctl.get_ref().to_string(), limit);
    }
    Ok(out)
}

/// Reads `text` (the file `file`) over the defaults.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let error = |p: Problem| ConfigError {
        file: file.to_owned(),
        line: Some(line_of(text, p.span.start)),
        key: p.key,
        reason: p.reason,
    };
    let root = DeTable::parse(text).map_err(|e| {
        let key = e
            .span()
            .map_or_else(|| "(file)".to_owned(), |s| key_at(text, s.start));
        ConfigError {
            file: file.to_owned(),
            line: e.span().map(|s| line_of(text, s.start)),
            key,
            reason: e.message().trim().to_owned(),
        }
    })?;
    let mut config = Config::default();
    let sections = keys::sections();
    for (section, table) in root.get_ref() {
        let section_name = section.get_ref().as_ref();
        if !sections.contains(&section_name) {
            return Err(error(Problem::at(
                section.span(),
                section_name,
                unknown(&sections),
            )));
        }
        let DeValue::Table(entries) = table.get_ref() else {
            return Err(error(Problem::at(
                table.span(),
                section_name,
                wrong_type(table.get_ref(), "a table"),
            )));
        };
        for (field, value) in entries {
            let dotted = format!("{section_name}.{}", field.get_ref());
            let Some(key) = keys::find(&dotted) else {
                let choices: Vec<&str> = keys::KEYS
                    .iter()
                    .filter(|k| k.section() == section_name)
                    .map(Key::field)
                    .collect();
                return Err(error(Problem::at(field.span(), dotted, unknown(&choices))));
            };
            apply(&mut config, key, value).map_err(error)?;
        }
    }
    Ok(config)
}
