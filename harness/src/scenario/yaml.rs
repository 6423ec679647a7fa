//! The one module that touches `serde_yaml` (archived upstream): every lab file in YAML — scenarios,
//! requirements, peer definitions, expected results — is parsed here, so a successor crate is a
//! one-file change.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A YAML file that does not fit its schema, with the place and the field path.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", path.display())]
pub struct YamlError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line (0 when the parser gave no location).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The field path and what is wrong, e.g. `steps[3]: unknown field `sned``.
    pub message: String,
}

/// Parses `text` (the contents of `path`) into `T`.
pub fn from_str<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, YamlError> {
    serde_yaml::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        let mut message = e.to_string();
        // serde_yaml appends " at line L column C"; the prefix already says where.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        YamlError { path: path.to_path_buf(), line, column, message }
    })
}

/// Reads and parses a YAML file.
pub fn from_file<T: DeserializeOwned>(path: &Path) -> Result<T, super::LoadError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| super::LoadError::Io { path: path.to_path_buf(), source })?;
    Ok(from_str(path, &text)?)
}

/// Serializes a value as YAML (used when writing expected-results files).
pub fn to_string<T: Serialize>(value: &T) -> Result<String, YamlError> {
    serde_yaml::to_string(value).map_err(|e| YamlError {
        path: PathBuf::new(),
        line: 0,
        column: 0,
        message: e.to_string(),
    })
}
