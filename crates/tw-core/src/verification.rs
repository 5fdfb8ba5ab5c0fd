//! How a source proves its deliveries are its own: the spec's HMAC by default, or a scheme the
//! sender can actually produce (see [`Verification`]). The secret stays the source's one secret
//! whatever the scheme; the scheme decides where the sender puts it and what form it must have.
//!
//! Written in the API and the config file as a scheme name (`"standard-webhooks"`) or an object
//! with the scheme and its settings (`{"scheme": "header-token", "header": "X-Api-Key"}`); shown
//! always as the object.

use base64::Engine as _;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use std::fmt;

/// A source's verification scheme.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Verification {
    /// The spec's scheme: `X-Webhook-Signature: sha256=<hex HMAC of "<X-Webhook-Timestamp>.<body>">`.
    #[default]
    Hmac,
    /// Standard Webhooks (Svix): `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`;
    /// the secret is `whsec_` and base64.
    StandardWebhooks,
    /// GitHub-style: `X-Hub-Signature-256: sha256=<hex HMAC of the body>`; no timestamp.
    Github,
    /// A named request header carries the secret itself (`Bearer <secret>` also accepted in
    /// `Authorization`).
    HeaderToken {
        /// The header's name, lowercase.
        header: HeaderName,
    },
    /// HTTP Basic authentication; the secret is the password, any user name.
    Basic,
    /// The secret is the last path segment: `POST /api/webhooks/<source>/<secret>`.
    UrlToken,
}

/// The schemes' names, as written in settings.
pub const SCHEMES: [&str; 6] = ["hmac", "standard-webhooks", "github", "header-token", "basic", "url-token"];

/// A header name a `header-token` source reads: a valid HTTP field name (lowercase), and none of
/// the headers proxies, the HTTP layer or the other schemes own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderName(String);

/// Headers a token cannot travel in: HTTP's own framing, what proxies rewrite, and the ids we echo.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "cookie",
    "user-agent",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "forwarded",
    "x-real-ip",
    "x-request-id",
    "x-tw-request-id",
];

impl HeaderName {
    /// Validates a header name (1 to 64 characters of HTTP's token set) and lowercases it.
    pub fn parse(s: &str) -> Result<HeaderName, String> {
        let ok = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !ok {
            return Err("must be an HTTP header name: 1 to 64 letters, digits or !#$%&'*+-.^_`|~ (e.g. X-Api-Key)".into());
        }
        let lower = s.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(format!(
                "'{s}' cannot carry a token (the HTTP layer or a proxy owns it); pick a header of your own, e.g. X-Api-Key"
            ));
        }
        Ok(HeaderName(lower))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A problem with a `verification` value: the field path it concerns and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationError {
    /// `verification` or `verification.<key>`.
    pub field: String,
    pub message: String,
}

impl VerificationError {
    fn at(field: &str, message: impl Into<String>) -> Self {
        let field = if field.is_empty() { "verification".to_string() } else { format!("verification.{field}") };
        VerificationError { field, message: message.into() }
    }
}

impl Verification {
    /// The scheme's name as written in settings.
    pub fn scheme(&self) -> &'static str {
        match self {
            Verification::Hmac => "hmac",
            Verification::StandardWebhooks => "standard-webhooks",
            Verification::Github => "github",
            Verification::HeaderToken { .. } => "header-token",
            Verification::Basic => "basic",
            Verification::UrlToken => "url-token",
        }
    }

    /// Reads a `verification` value: a scheme name, or `{"scheme": ..., ...settings}`.
    pub fn parse(v: &Value) -> Result<Verification, VerificationError> {
        let expected = || format!("must be a scheme name ({}) or an object {{\"scheme\": ...}}", SCHEMES.join(", "));
        let (scheme, settings) = match v {
            Value::String(s) => (s.as_str(), None),
            Value::Object(o) => match o.get("scheme") {
                Some(Value::String(s)) => (s.as_str(), Some(o)),
                Some(_) => return Err(VerificationError::at("scheme", format!("must be one of {}", SCHEMES.join(", ")))),
                None => return Err(VerificationError::at("scheme", "is required")),
            },
            _ => return Err(VerificationError::at("", expected())),
        };
        let field = if settings.is_some() { "scheme" } else { "" };
        let parsed = match scheme {
            "hmac" => Verification::Hmac,
            "standard-webhooks" => Verification::StandardWebhooks,
            "github" => Verification::Github,
            "basic" => Verification::Basic,
            "url-token" => Verification::UrlToken,
            "header-token" => {
                let header = settings.and_then(|o| o.get("header"));
                match header {
                    Some(Value::String(h)) => {
                        Verification::HeaderToken { header: HeaderName::parse(h).map_err(|e| VerificationError::at("header", e))? }
                    }
                    Some(_) => return Err(VerificationError::at("header", "must be a header name, e.g. X-Api-Key")),
                    None => {
                        return Err(VerificationError::at(
                            if settings.is_some() { "header" } else { "" },
                            "header-token needs the header's name: {\"scheme\": \"header-token\", \"header\": \"X-Api-Key\"}",
                        ));
                    }
                }
            }
            other => {
                let shown: String = other.chars().take(40).collect();
                return Err(VerificationError::at(field, format!("unknown scheme '{shown}' (expected {})", SCHEMES.join(", "))));
            }
        };
        if let Some(o) = settings {
            let allowed: &[&str] = if matches!(parsed, Verification::HeaderToken { .. }) { &["scheme", "header"] } else { &["scheme"] };
            if let Some(k) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
                let shown: String = k.chars().take(40).collect();
                return Err(VerificationError::at(&shown, format!("unknown field for scheme {}", parsed.scheme())));
            }
        }
        Ok(parsed)
    }

    /// The object form, as shown by the API and stored.
    pub fn to_value(&self) -> Value {
        let mut o = Map::new();
        o.insert("scheme".into(), Value::String(self.scheme().into()));
        if let Verification::HeaderToken { header } = self {
            o.insert("header".into(), Value::String(header.0.clone()));
        }
        Value::Object(o)
    }

    /// Whether `secret` has the form the scheme needs (on top of [`crate::Secret::validate`]); the
    /// reason when not.
    pub fn check_secret(&self, secret: &str) -> Result<(), String> {
        match self {
            Verification::Hmac | Verification::Github => Ok(()),
            Verification::StandardWebhooks => match secret.starts_with("whsec_").then(|| crate::schemes::standard_webhooks_key(secret)).flatten() {
                Some(key) if (16..=64).contains(&key.len()) => Ok(()),
                _ => Err("a standard-webhooks secret is 'whsec_' followed by the base64 of 16 to 64 random bytes (e.g. whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw); leave it out to have one generated".into()),
            },
            Verification::HeaderToken { .. } | Verification::Basic => {
                if secret.bytes().all(|b| b.is_ascii_graphic()) {
                    Ok(())
                } else {
                    Err(format!("a {} secret travels in a header: visible ASCII characters only, no spaces", self.scheme()))
                }
            }
            Verification::UrlToken => {
                if secret.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) {
                    Ok(())
                } else {
                    Err("a url-token secret is a URL path segment: letters, digits, '-', '.', '_' or '~' only".into())
                }
            }
        }
    }

    /// A new secret of the scheme's form from 32 random bytes.
    pub fn secret_from(&self, random: &[u8; 32]) -> String {
        match self {
            Verification::StandardWebhooks => format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(random)),
            _ => format!("whsec_{}", hex::encode(random)),
        }
    }
}

/// What a sender adds to a request so that a source of a scheme accepts it: headers, and for
/// `url-token` the path segment after the source's name. Holds the secret (or a proof of it):
/// for the sender's side only (`tw-cli webhook test`, the server's own test delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// Header name and value, in the order a sender would write them.
    pub headers: Vec<(String, String)>,
    /// `url-token`: the token to append to `/api/webhooks/<source>/`.
    pub path_token: Option<String>,
}

impl Verification {
    /// Signs `body` as a sender of this scheme would with `secret` at `timestamp` (unix seconds);
    /// `message_id` is Standard Webhooks' `webhook-id`.
    pub fn sign(&self, secret: &str, body: &[u8], timestamp: i64, message_id: &str) -> SignedRequest {
        let header = |n: &str, v: String| vec![(n.to_string(), v)];
        let (headers, path_token) = match self {
            Verification::Hmac => {
                let ts = timestamp.to_string();
                let sig = crate::signature::sign(&crate::Secret::new(secret), &ts, body);
                (vec![("X-Webhook-Timestamp".to_string(), ts), ("X-Webhook-Signature".to_string(), format!("sha256={sig}"))], None)
            }
            Verification::StandardWebhooks => {
                let key = crate::schemes::standard_webhooks_key(secret).unwrap_or_default();
                let sig = crate::schemes::standard_webhooks_sign(&key, message_id, timestamp, body);
                (
                    vec![
                        ("webhook-id".to_string(), message_id.to_string()),
                        ("webhook-timestamp".to_string(), timestamp.to_string()),
                        ("webhook-signature".to_string(), sig),
                    ],
                    None,
                )
            }
            Verification::Github => (header("X-Hub-Signature-256", crate::schemes::github_sign(secret.as_bytes(), body)), None),
            Verification::HeaderToken { header: name } => (header(name.as_str(), secret.to_string()), None),
            Verification::Basic => {
                let creds = base64::engine::general_purpose::STANDARD.encode(format!("tw:{secret}"));
                (header("Authorization", format!("Basic {creds}")), None)
            }
            Verification::UrlToken => (Vec::new(), Some(secret.to_string())),
        };
        SignedRequest { headers, path_token }
    }
}

impl Serialize for Verification {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Verification {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Verification::parse(&v).map_err(|e| serde::de::Error::custom(format!("{}: {}", e.field, e.message)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_and_objects_read_alike_and_show_as_objects() {
        for name in SCHEMES.iter().filter(|s| **s != "header-token") {
            let by_name = Verification::parse(&json!(name)).unwrap();
            assert_eq!(by_name, Verification::parse(&json!({"scheme": name})).unwrap());
            assert_eq!(by_name.to_value(), json!({"scheme": name}));
            assert_eq!(Verification::parse(&by_name.to_value()).unwrap(), by_name);
        }
        let h = Verification::parse(&json!({"scheme": "header-token", "header": "X-Api-Key"})).unwrap();
        assert_eq!(h.to_value(), json!({"scheme": "header-token", "header": "x-api-key"}));
        assert_eq!(Verification::parse(&h.to_value()).unwrap(), h);
    }

    #[test]
    fn mistakes_name_their_field() {
        let err = |v: Value| {
            let e = Verification::parse(&v).unwrap_err();
            (e.field, e.message)
        };
        assert_eq!(err(json!("nope")).0, "verification");
        assert!(err(json!("nope")).1.contains("unknown scheme 'nope'"));
        assert_eq!(err(json!({"scheme": "nope"})).0, "verification.scheme");
        assert_eq!(err(json!({})).0, "verification.scheme");
        assert_eq!(err(json!({"scheme": "header-token"})).0, "verification.header");
        assert_eq!(err(json!("header-token")).0, "verification");
        assert_eq!(err(json!({"scheme": "header-token", "header": "Content-Length"})).0, "verification.header");
        assert_eq!(err(json!({"scheme": "header-token", "header": "X Api"})).0, "verification.header");
        assert_eq!(err(json!({"scheme": "github", "header": "X-Api-Key"})).0, "verification.header");
        assert_eq!(err(json!(3)).0, "verification");
    }

    #[test]
    fn secrets_have_the_schemes_form() {
        let sw = Verification::StandardWebhooks;
        assert!(sw.check_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        assert!(sw.check_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(sw.check_secret("whsec_not base64!").is_err());
        assert!(Verification::UrlToken.check_secret("abc-DEF_123.456~x").is_ok());
        assert!(Verification::UrlToken.check_secret("abc/def?x").is_err());
        assert!(Verification::Basic.check_secret("has space in it").is_err());
        let random = [7u8; 32];
        for v in [Verification::Hmac, Verification::StandardWebhooks, Verification::UrlToken, Verification::Basic] {
            let s = v.secret_from(&random);
            assert!(v.check_secret(&s).is_ok(), "{v:?}: {s}");
            assert!(crate::Secret::validate(&s).is_ok());
        }
    }
}
