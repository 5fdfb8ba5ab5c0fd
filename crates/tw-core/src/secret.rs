//! A webhook secret that never prints itself and is wiped from memory when dropped.

use std::fmt;
use zeroize::Zeroizing;

/// A source's shared HMAC secret. `Debug` and `Display` are redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

/// The shortest secret we accept from a user; generated ones are much longer.
pub const MIN_SECRET_LEN: usize = 8;
/// The longest secret we accept.
pub const MAX_SECRET_LEN: usize = 512;

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// The secret itself, for signing and for showing once to its creator.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Checks a user-supplied secret's length and characters; returns a reason when it is unfit.
    pub fn validate(value: &str) -> Result<(), String> {
        // Characters, as the API document's `minLength` counts them (not bytes).
        if value.chars().count() < MIN_SECRET_LEN {
            return Err(format!("must be at least {MIN_SECRET_LEN} characters"));
        }
        if value.chars().count() > MAX_SECRET_LEN {
            return Err(format!("must be at most {MAX_SECRET_LEN} characters"));
        }
        if value.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2-hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn validation_bounds() {
        assert!(Secret::validate("short").is_err());
        assert!(Secret::validate("long-enough").is_ok());
        assert!(Secret::validate("has\nnewline").is_err());
    }
}
