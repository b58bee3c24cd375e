//! One line of the doctor's report ([`Check`] and its [`Level`]) and reading the host's
//! text files; what every topic's checks share.

use std::fmt;
use std::path::Path;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Fine as it is.
    Ok,
    /// Informational: nothing is wrong, but there is something to know.
    Note,
    /// Works, but slower or less robust than it could be.
    Warn,
    /// sluice cannot run as configured.
    Fail,
}

impl Level {
    fn tag(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Note => "note",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// How it came out.
    pub level: Level,
    /// What was checked.
    pub name: String,
    /// What was found.
    pub value: String,
    /// What to change; shown after the value.
    pub fix: Option<String>,
}

impl Check {
    pub(super) fn ok(name: impl Into<String>, value: impl Into<String>) -> Check {
        Check {
            level: Level::Ok,
            name: name.into(),
            value: value.into(),
            fix: None,
        }
    }

    pub(super) fn with(
        level: Level,
        name: impl Into<String>,
        value: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            level,
            name: name.into(),
            value: value.into(),
            fix: Some(fix.into()),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<4} {}: {}", self.level.tag(), self.name, self.value)?;
        if let Some(fix) = &self.fix {
            write!(f, " — {fix}")?;
        }
        Ok(())
    }
}

/// A /proc or /sys file as text; `None` when unreadable.
pub(super) fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_have_the_documented_shape() {
        let ok = Check::ok("udp gso", "UDP_SEGMENT accepted");
        assert_eq!(ok.to_string(), "ok   udp gso: UDP_SEGMENT accepted");
        let warn = Check::with(Level::Warn, "x", "1", "do y");
        assert_eq!(warn.to_string(), "warn x: 1 — do y");
    }
}
