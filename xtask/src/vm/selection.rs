//! Which kernel tests a run selects.

use super::series::NOT_IN_VMS;

/// Which tests a run selects: harness filters (any may match; none: all) and
/// `--skip` filters.
#[derive(Clone)]
pub struct Selection {
    filters: Vec<String>,
    skips: Vec<String>,
}

impl Selection {
    /// What `vm-test` runs for `filters`: those tests, or, without filters, every
    /// test but [`NOT_IN_VMS`].
    pub fn for_vms(filters: &[String]) -> Self {
        let skips = if filters.is_empty() {
            NOT_IN_VMS.iter().map(|(f, _)| (*f).to_owned()).collect()
        } else {
            Vec::new()
        };
        Self {
            filters: filters.to_vec(),
            skips,
        }
    }

    /// Exactly the tests matching `filters`.
    pub fn only(filters: &[&str]) -> Self {
        Self {
            filters: filters.iter().map(|t| (*t).to_owned()).collect(),
            skips: Vec::new(),
        }
    }

    /// What it selects, in words.
    pub fn describe(&self) -> String {
        match (self.filters.is_empty(), self.skips.is_empty()) {
            (true, true) => "every kernel test".to_owned(),
            (true, false) => format!("every kernel test but {}", self.skips.join(", ")),
            (false, _) => format!("kernel tests matching {}", self.filters.join(", ")),
        }
    }

    /// The kernel test binary's arguments for this selection.
    pub fn args(&self) -> Vec<String> {
        let skips = self
            .skips
            .iter()
            .flat_map(|s| ["--skip".to_owned(), s.clone()]);
        self.filters.iter().cloned().chain(skips).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_skips_only_without_filters() {
        let all = Selection::for_vms(&[]);
        assert!(all.args().contains(&"--skip".to_owned()));
        assert!(all.args().contains(&"deploy::".to_owned()));
        let some = Selection::for_vms(&["listen::".to_owned()]);
        assert_eq!(some.args(), ["listen::"]);
        assert_eq!(Selection::only(&["a::b"]).args(), ["a::b"]);
    }
}
