//! Human output: aligned tables; machine output: JSON.

use clap::ValueEnum;
use serde_json::Value;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Prints a JSON value pretty.
pub fn json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// A value as a table cell, written as its JSON (`-` for null, strings without quotes), so a
/// table shows what `-o json` shows.
pub fn cell(v: &impl serde::Serialize) -> String {
    match serde_json::to_value(v).unwrap_or_default() {
        Value::Null => "-".into(),
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Prints one row per item under headers.
pub fn table_of<T>(headers: &[&str], items: impl IntoIterator<Item = T>, row: impl Fn(T) -> Vec<String>) {
    table(headers, &items.into_iter().map(row).collect::<Vec<_>>());
}

/// Prints rows under headers, columns padded to the widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Prints `key: value` pairs with the keys aligned.
pub fn pairs(items: &[(&str, String)]) {
    let w = items.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in items {
        println!("{k:<w$}  {v}");
    }
}
