//! Look-alike domains: edit distance (Damerau-Levenshtein, optimal string alignment),
//! confusable characters (Unicode's UTS #39 skeletons: `rn` -> `m`, `0` -> `o`, `1` -> `l`,
//! Cyrillic and Greek homoglyphs, accents) and a protected brand embedded in another domain
//! (`example-login.top`, `example.net`). Names are compared in their Unicode form, so a
//! punycode host (`xn--exmple-cua.com`) is judged by what it shows (`exämple.com`); brands and
//! public suffixes come from the Public Suffix List. A protected domain itself and its
//! subdomains are never look-alikes.

use crate::hosts::DomainName;
pub use crate::hosts::skeleton;

/// Longest input compared by edit distance (longer strings are never "close").
const MAX_LEN: usize = 128;

/// Damerau-Levenshtein distance (optimal string alignment) on characters; inputs longer than
/// 128 characters give `usize::MAX`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len() > MAX_LEN || b.len() > MAX_LEN {
        return usize::MAX;
    }
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}

/// The organisation part of a domain, by the Public Suffix List (`mail.example.co.uk` ->
/// `example`), in Unicode form; empty when the text is not a domain name.
pub fn brand_of(domain: &str) -> String {
    DomainName::parse(domain).map(|d| d.brand()).unwrap_or_default()
}

/// Normalizes a domain for comparison: the Unicode form of the name (IDNA: lowercase, punycode
/// decoded, no trailing dot), so that both forms of one name compare equal; text that is not a
/// domain name is only trimmed and lowercased.
pub fn normalize_domain(d: &str) -> String {
    match DomainName::parse(d) {
        Some(name) => name.unicode().to_string(),
        None => d.trim().trim_end_matches('.').to_lowercase(),
    }
}

pub use crate::hosts::is_within;

/// Whether `host` belongs to any protected domain.
pub fn is_internal(host: &str, protected: &[String]) -> bool {
    let host = normalize_domain(host);
    protected.iter().any(|p| is_within(&host, &normalize_domain(p)))
}

/// A look-alike match: which protected domain, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookalike {
    pub protected: String,
    pub reason: String,
}

/// Whether `host` (either form) imitates one of the protected domains (never when it is one of
/// them or a subdomain of one). `max_distance` bounds the edit distance.
pub fn lookalike(host: &str, protected: &[String], max_distance: usize) -> Option<Lookalike> {
    let name = DomainName::parse(host)?;
    let host = name.unicode();
    if is_internal(host, protected) {
        return None;
    }
    let host_skel = skeleton(host);
    // Tokens of the host without its public suffix: `a.examp1e-login.co.uk` -> a, examp1e, login.
    let tokens: Vec<(&str, String)> = name
        .labels_before_suffix()
        .into_iter()
        .flat_map(|l| l.split(['-', '_']))
        .filter(|t| !t.is_empty())
        .take(32)
        .map(|t| (t, skeleton(t)))
        .collect();
    for p in protected {
        let Some(pname) = DomainName::parse(p) else { continue };
        let p = pname.unicode();
        let brand = pname.brand();
        let found = |reason: String| Some(Lookalike { protected: p.to_string(), reason });
        if host_skel == skeleton(p) {
            return found(format!("uses confusable characters to imitate {p}"));
        }
        let d = edit_distance(host, p);
        if p.chars().count() >= 6 && d <= max_distance {
            return found(format!("is {d} edit(s) away from {p}"));
        }
        let brand_len = brand.chars().count();
        if brand_len < 4 {
            continue;
        }
        let brand_skel = skeleton(&brand);
        let tolerance = max_distance.min((brand_len / 4).max(1));
        for (tok, tok_skel) in &tokens {
            if *tok == brand {
                return found(format!("embeds the brand '{brand}' of {p} in another domain"));
            }
            if *tok_skel == brand_skel {
                return found(format!("uses confusable characters to imitate '{brand}' of {p}"));
            }
            let d = edit_distance(tok, &brand);
            if brand_len >= 5 && d <= tolerance {
                return found(format!("'{tok}' is {d} edit(s) away from the brand '{brand}' of {p}"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prot() -> Vec<String> {
        vec!["example.com".into(), "microsoft.com".into(), "acme.co.uk".into()]
    }

    #[test]
    fn distance() {
        assert_eq!(edit_distance("example", "examp1e"), 1);
        assert_eq!(edit_distance("example", "exmaple"), 1);
        assert_eq!(edit_distance("rnicrosoft", "microsoft"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance(&"a".repeat(200), "a"), usize::MAX);
    }

    #[test]
    fn confusables_fold() {
        assert_eq!(skeleton("rnicrosoft"), skeleton("microsoft"));
        assert_eq!(skeleton("examp1e"), skeleton("example"));
        assert_eq!(skeleton("g00gle"), skeleton("google"));
        assert_eq!(skeleton("vvave"), skeleton("wave"));
        assert_eq!(skeleton("ехаmple"), skeleton("example")); // Cyrillic е, х, а
        assert_eq!(skeleton("exämple"), skeleton("example"));
    }

    #[test]
    fn lookalikes_are_found() {
        let p = prot();
        for host in [
            "examp1e.com",
            "rnicrosoft.com",
            "exarnple.com",
            "examp1e-login.top",
            "secure.example.net",
            "ехаmple.com",
            "micros0ft-support.xyz",
            "acme.com",
            "xn--exmple-cua.com",
            "exämple.com",
            "examp1e.co.uk",
            "login.rnicrosoft.com.au",
        ] {
            assert!(lookalike(host, &p, 2).is_some(), "{host}");
        }
    }

    /// The two forms of one name are one name: a protected domain given in Unicode covers its
    /// punycode host, and the reverse.
    #[test]
    fn both_forms_are_one_name() {
        let p = vec!["exämple.com".to_string()];
        assert!(is_internal("xn--exmple-cua.com", &p) && is_internal("www.EXÄMPLE.com", &p));
        assert!(lookalike("xn--exmple-cua.com", &p, 2).is_none());
        let p = vec!["xn--exmple-cua.com".to_string()];
        assert!(is_internal("exämple.com", &p));
        assert_eq!(normalize_domain("XN--EXMPLE-CUA.COM."), "exämple.com");
    }

    #[test]
    fn protected_and_unrelated_are_not() {
        let p = prot();
        for host in [
            "example.com",
            "mail.example.com",
            "EXAMPLE.COM.",
            "login.microsoft.com",
            "contoso.com",
            "github.com",
            "amazon.com",
            "bank.example",
            "examination.com",
            "not a domain",
        ] {
            assert!(lookalike(host, &p, 2).is_none(), "{host}");
        }
        assert!(lookalike("examp1e.com", &[], 2).is_none());
    }

    #[test]
    fn helpers() {
        assert_eq!(brand_of("mail.acme.co.uk"), "acme");
        assert_eq!(brand_of("corp.example.com"), "example");
        assert_eq!(brand_of("x.github.io"), "x");
        assert_eq!(brand_of("not a domain"), "");
        assert!(is_within("a.example.com", "example.com"));
        assert!(!is_within("badexample.com", "example.com"));
    }
}
