//! Runs of `nettune check`, saved under `<tuning.state_dir>/checks/` (next to the
//! tuning journal) as `<UTC time>.json`, so names sort by time.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use super::report::Run;

/// The directory of saved runs under the state directory.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("checks")
}

/// `YYYYMMDD-HHMMSS` (UTC) of unix time `secs`.
pub fn id_of(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The saved runs' ids, oldest first.
pub fn list(state_dir: &Path) -> anyhow::Result<Vec<String>> {
    let dir = dir(state_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut ids: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".json")
                .map(str::to_owned)
        })
        .collect();
    ids.sort();
    Ok(ids)
}

/// Saves `run` under a fresh id made from its start time (`-2`, `-3`, … when
/// several start in the same second); returns the file.
pub fn save(state_dir: &Path, run: &mut Run) -> anyhow::Result<PathBuf> {
    let dir = dir(state_dir);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let base = id_of(run.started as u64);
    for n in 1.. {
        let id = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let path = dir.join(format!("{id}.json"));
        run.id = id;
        let text = serde_json::to_string_pretty(run)?;
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut file) => {
                std::io::Write::write_all(&mut file, text.as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }
    unreachable!("ids run out")
}

/// The run `name` names: an id, `last`, `previous` (the one before the last),
/// or a file path.
pub fn load(state_dir: &Path, name: &str) -> anyhow::Result<Run> {
    let path = if name.ends_with(".json") && Path::new(name).exists() {
        PathBuf::from(name)
    } else {
        let ids = list(state_dir)?;
        let from_end = match name {
            "last" => Some(1),
            "previous" => Some(2),
            _ => None,
        };
        let id = match from_end {
            Some(k) => match ids.len().checked_sub(k) {
                Some(i) => ids[i].clone(),
                None => bail!(
                    "`{name}`: only {} runs saved in {}",
                    ids.len(),
                    dir(state_dir).display()
                ),
            },
            None if ids.iter().any(|i| i == name) => name.to_owned(),
            None => bail!(
                "no saved run `{name}` in {} (saved: {})",
                dir(state_dir).display(),
                ids.join(", ")
            ),
        };
        dir(state_dir).join(format!("{id}.json"))
    };
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a saved run", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_utc_times_that_sort() {
        assert_eq!(id_of(0), "19700101-000000");
        // date -u -d @1796313848 +%Y%m%d-%H%M%S
        assert_eq!(id_of(1_796_313_848), "20261203-160408");
        assert_eq!(id_of(951_782_400), "20000229-000000");
    }
}
