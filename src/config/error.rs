//! Config errors: each names its file, line, column and field, and says what to fix.

use std::fmt;

/// Where a value stands in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Place {
    /// 1-based line; 0 when unknown.
    pub line: u64,
    /// 1-based column; 0 when unknown.
    pub column: u64,
}

impl Place {
    /// The place serde-saphyr recorded for a value.
    pub fn of<T>(spanned: &serde_saphyr::Spanned<T>) -> Place {
        Place::from(spanned.referenced)
    }
}

impl From<serde_saphyr::Location> for Place {
    fn from(l: serde_saphyr::Location) -> Self {
        Place { line: l.line(), column: l.column() }
    }
}

/// One problem found while loading a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name (or `<demo>`, `<string>`) the text came from.
    pub origin: String,
    /// Where in that file.
    pub place: Place,
    /// Dotted path to the field, e.g. `routes[3].match.path`; empty for the whole file.
    pub field: String,
    /// What is wrong, and where possible how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.origin, self.place.line, self.place.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// All the errors of one load, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
