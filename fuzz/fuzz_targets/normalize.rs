//! Format detection and every normalizer, on any JSON: detected and each format pinned. A
//! normalizer must give an alert or an error for any object, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use tw_core::{Format, Severity, normalize};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let none = BTreeMap::new();
    let mut mapping = BTreeMap::new();
    mapping.insert("high".to_string(), Severity::Critical);
    mapping.insert("5".to_string(), Severity::Low);
    let detected = normalize(&value, None, &none);
    assert_eq!(detected.is_ok(), value.is_object());
    let _ = normalize(&value, None, &mapping);
    for format in Format::ALL {
        if let Ok(alert) = normalize(&value, Some(format), &none) {
            assert_eq!(alert.format, format);
        }
    }
});
