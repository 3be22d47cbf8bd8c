//! The actuator: the only code in nettune that writes a sysctl.
//!
//! It reads and writes through [`System`], so the tuner, `apply` and `rollback`
//! run unchanged against the node ([`crate::sys::Kernel`]) or a fake. Names reach
//! it only as table entries ([`Tunable`]), and the system layer refuses any name
//! outside `net.*` again, so no path outside `/proc/sys/net` can be formed.

use std::io;

use crate::{
    model::{
        tunables::Tunable,
        tuning::{NamespaceIdentity, Target},
        value::{Value, ValueError, normalise, same_value},
    },
    sys::System,
};

/// Why a sysctl's value could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error("reading {name}: {source}")]
    Io {
        /// The sysctl.
        name: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Its text is not a value of its shape.
    #[error(transparent)]
    Value(#[from] ValueError),
}

/// Reads and writes sysctls at targets.
#[derive(Debug)]
pub struct Actuator<S: System> {
    system: S,
}

impl<S: System> Actuator<S> {
    /// An actuator over `system`.
    pub fn new(system: S) -> Self {
        Self { system }
    }

    /// The system it acts on.
    pub fn system(&self) -> &S {
        &self.system
    }

    /// The raw text of `spec` at `target`, trimmed.
    pub fn read_text(&self, target: &Target, spec: &Tunable) -> io::Result<String> {
        Ok(self
            .system
            .read_sysctl(target, spec.name)?
            .trim()
            .to_owned())
    }

    /// The parsed value of `spec` at `target`.
    pub fn read(&self, target: &Target, spec: &Tunable) -> Result<Value, ReadError> {
        let text = self
            .read_text(target, spec)
            .map_err(|source| ReadError::Io {
                name: spec.name,
                source,
            })?;
        Ok(Value::parse(spec, &text)?)
    }

    /// Writes `value` (as the kernel prints it) to `spec` at `target`, then reads
    /// it back: a write the kernel did not take (as it rounds what it takes) is
    /// an error, never a success. In a pod's namespace, only if it is still the
    /// one `identity` names (journaled with the change).
    pub fn write(
        &self,
        target: &Target,
        identity: Option<&NamespaceIdentity>,
        spec: &Tunable,
        value: &str,
    ) -> io::Result<()> {
        // An empty value must still reach the kernel: `write(2)` of 0 bytes (what
        // writing "" amounts to) leaves a sysctl as it was; a newline clears it.
        let text = if value.trim().is_empty() { "\n" } else { value };
        let now = self
            .system
            .write_sysctl(target, identity, spec.name, text)?
            .trim()
            .to_owned();
        // Compared as the kernel keeps it (a hash size rounded to whole pages).
        let kept = Value::parse(spec, value).map_or_else(
            |_| value.to_owned(),
            |v| normalise(spec, &v, self.system.page_size()).to_string(),
        );
        if same_value(spec, &now, &kept) {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "wrote {:?} but it reads {:?}",
                value.replace('\t', " "),
                now.replace('\t', " ")
            )))
        }
    }
}
