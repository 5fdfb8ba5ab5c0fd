//! Look-alike domains: edit distance (Damerau-Levenshtein, optimal string alignment), confusable
//! characters (`rn` -> `m`, `0` -> `o`, `1` -> `l`, `vv` -> `w`, Cyrillic and Greek homoglyphs)
//! and a protected brand embedded in another domain (`example-login.top`, `example.net`).
//! A protected domain itself and its subdomains are never look-alikes.

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
    for j in 0..=m {
        d[0][j] = j;
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

/// The "skeleton" of a name: what it looks like, with confusable characters folded together.
pub fn skeleton(s: &str) -> String {
    let mut folded = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        let f = match c {
            '0' | 'о' | 'ο' | 'ө' => 'o',
            '1' | 'i' | '|' | 'і' | 'ӏ' | 'ι' | 'l' | 'ł' | '!' => 'l',
            'а' | 'α' | 'à' | 'á' | 'â' | 'ä' | 'å' | '@' => 'a',
            'е' | 'ε' | 'è' | 'é' | 'ê' | 'ë' | '3' => 'e',
            'р' | 'ρ' => 'p',
            'с' | 'ϲ' | 'ç' => 'c',
            'х' | 'χ' => 'x',
            'у' | 'γ' => 'y',
            'ј' => 'j',
            'ѕ' | '5' | '$' => 's',
            'ԁ' => 'd',
            'һ' => 'h',
            'ո' | 'п' => 'n',
            'м' => 'm',
            'т' | 'τ' => 't',
            'в' | 'β' => 'b',
            'к' | 'κ' => 'k',
            'ν' | 'ѵ' => 'v',
            'ѡ' | 'ω' => 'w',
            'ɡ' => 'g',
            'ü' | 'ú' | 'ù' | 'û' | 'υ' => 'u',
            'ö' | 'ó' | 'ò' | 'ô' => 'o',
            '_' => '-',
            other => other,
        };
        folded.push(f);
    }
    // Multi-character confusables.
    folded.replace("rn", "m").replace("vv", "w").replace("cl", "d")
}

/// The organisation part of a domain (`mail.example.co.uk` -> `example`).
pub fn brand_of(domain: &str) -> &str {
    let labels: Vec<&str> = domain.split('.').filter(|l| !l.is_empty()).collect();
    match labels.len() {
        0 => "",
        1 => labels[0],
        n => {
            let sld = labels[n - 2];
            if n >= 3 && labels[n - 1].len() == 2 && matches!(sld, "co" | "com" | "net" | "org" | "gov" | "ac" | "edu" | "ne" | "or") {
                labels[n - 3]
            } else {
                sld
            }
        }
    }
}

/// Normalizes a domain for comparison: trimmed, lowercase, no trailing dot.
pub fn normalize_domain(d: &str) -> String {
    d.trim().trim_end_matches('.').to_lowercase()
}

/// Whether `host` is `protected` or one of its subdomains.
pub fn is_within(host: &str, protected: &str) -> bool {
    !protected.is_empty()
        && (host == protected
            || (host.len() > protected.len() && host.ends_with(protected) && host[..host.len() - protected.len()].ends_with('.')))
}

/// Whether `host` belongs to any protected domain.
pub fn is_internal(host: &str, protected: &[String]) -> bool {
    let host = normalize_domain(host);
    protected.iter().any(|p| is_within(&host, &normalize_domain(p)))
}

/// Whether any label of the domain is punycode (`xn--`).
pub fn is_punycode(host: &str) -> bool {
    host.split('.').any(|l| l.len() > 4 && l.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("xn--")))
}

/// A look-alike match: which protected domain, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookalike {
    pub protected: String,
    pub reason: String,
}

/// Whether `host` imitates one of the protected domains (never when it is one of them or a
/// subdomain of one). `max_distance` bounds the edit distance.
pub fn lookalike(host: &str, protected: &[String], max_distance: usize) -> Option<Lookalike> {
    let host = normalize_domain(host);
    if host.is_empty() || host.len() > 253 || is_internal(&host, protected) {
        return None;
    }
    let host_skel = skeleton(&host);
    // Tokens of the host without its TLD: `a.examp1e-login.top` -> a, examp1e, login.
    let without_tld = host.rsplit_once('.').map_or(host.as_str(), |(rest, _)| rest);
    let tokens: Vec<&str> = without_tld.split(['.', '-', '_']).filter(|t| !t.is_empty()).take(32).collect();
    for p in protected {
        let p = normalize_domain(p);
        if p.is_empty() {
            continue;
        }
        let brand = brand_of(&p);
        let found = |reason: String| Some(Lookalike { protected: p.clone(), reason });
        if host_skel == skeleton(&p) {
            return found(format!("uses confusable characters to imitate {p}"));
        }
        let d = edit_distance(&host, &p);
        if p.len() >= 6 && d <= max_distance {
            return found(format!("is {d} edit(s) away from {p}"));
        }
        if brand.chars().count() < 4 {
            continue;
        }
        let brand_skel = skeleton(brand);
        let tolerance = max_distance.min((brand.chars().count() / 4).max(1));
        for tok in &tokens {
            if *tok == brand {
                return found(format!("embeds the brand '{brand}' of {p} in another domain"));
            }
            if skeleton(tok) == brand_skel {
                return found(format!("uses confusable characters to imitate '{brand}' of {p}"));
            }
            if brand.chars().count() >= 5 && edit_distance(tok, brand) <= tolerance {
                return found(format!("'{tok}' is {} edit(s) away from the brand '{brand}' of {p}", edit_distance(tok, brand)));
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
        ] {
            assert!(lookalike(host, &p, 2).is_some(), "{host}");
        }
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
        ] {
            assert!(lookalike(host, &p, 2).is_none(), "{host}");
        }
        assert!(lookalike("examp1e.com", &[], 2).is_none());
    }

    #[test]
    fn helpers() {
        assert_eq!(brand_of("mail.acme.co.uk"), "acme");
        assert_eq!(brand_of("corp.example.com"), "example");
        assert!(is_within("a.example.com", "example.com"));
        assert!(!is_within("badexample.com", "example.com"));
        assert!(is_punycode("xn--exmple-cua.com"));
        assert!(!is_punycode("example.com"));
        assert!(!is_punycode("ⱥ\u{102441}j.com"), "multi-byte labels never panic");
    }
}
