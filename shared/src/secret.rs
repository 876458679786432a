//! Secrets: API keys and tokens, held so that no `Debug`, `Display` or log line shows them.

use std::fmt;

/// A secret value. It prints as `***`; the value is read only through [`Secret::expose`],
/// at the one place it is handed to a process or a request header.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Holds `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret from the environment variable `name`, if it is set and not empty.
    pub fn from_env(name: &str) -> Option<Secret> {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .map(Secret)
    }

    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the secret replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.0, "***")
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let key = Secret::new("sk-live-123");
        assert_eq!(format!("{key}"), "***");
        assert_eq!(format!("{key:?}"), "Secret(***)");
        assert_eq!(format!("{:?}", Some(key.clone())), "Some(Secret(***))");
        assert_eq!(key.expose(), "sk-live-123");
        assert_eq!(key.redact("key=sk-live-123;"), "key=***;");
    }
}
