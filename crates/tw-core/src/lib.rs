//! Pure domain logic of the webhook intake: what a source, an alert and an incident are, how a
//! request signature is verified, and how each vendor's payload becomes one [`Alert`].
//!
//! Nothing here does I/O or needs an async runtime, so every rule is unit-testable.

pub mod alert;
pub mod formats;
pub mod hosts;
pub mod incident;
pub mod schemes;
pub mod secret;
pub mod severity;
pub mod signature;
pub mod source;
pub mod timestamps;
pub mod triage;
pub mod verification;

pub use alert::{Alert, Entity, EntityKind};
pub use formats::{Format, Mapping, NormalizeError, normalize, normalize_mapped};
pub use incident::IncidentNumber;
pub use secret::Secret;
pub use severity::Severity;
pub use source::{SourceMode, SourceName, SourceNameError};
pub use verification::Verification;
