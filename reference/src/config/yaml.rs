//! The one module of this crate that touches `serde_yaml` (archived upstream; the harness keeps
//! its own single YAML module for the same reason): every YAML config file is parsed and printed
//! here, so a successor crate is a one-file change.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Where and why a YAML document does not fit the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// 1-based line, 0 when the parser gave no location.
    pub line: usize,
    /// 1-based column, 0 when the parser gave no location.
    pub column: usize,
    /// The field path and what is wrong, e.g. ``services[0].handler: unknown field `tpye` ``.
    pub message: String,
}

/// Parses `text` into `T`, keeping the position serde_yaml reports.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    serde_yaml::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        let mut message = e.to_string();
        // serde_yaml appends " at line L column C"; the caller prints the position up front.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        YamlError { line, column, message }
    })
}

/// Prints `value` as YAML.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, String> {
    serde_yaml::to_string(value).map_err(|e| e.to_string())
}

/// Runs `seed` over `text` (for [`super::locate`], which finds a path by failing there).
pub(crate) fn walk<'de, S: serde::de::DeserializeSeed<'de>>(text: &'de str, seed: S) -> Result<S::Value, YamlError> {
    seed.deserialize(serde_yaml::Deserializer::from_str(text)).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        YamlError { line, column, message: e.to_string() }
    })
}
