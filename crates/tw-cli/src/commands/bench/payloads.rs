//! The deliveries the bench sends: compact alerts of each vendor format, modelled on the shared
//! vendor fixtures (`fixtures/vendors/`) and on what `tw_core::formats::detect` recognises. Each
//! carries a unique id in the vendor's own id field, so every delivery makes a new incident, and
//! a filler string field (`padding`) brings the body to the asked size.

use clap::ValueEnum;

/// `--format`: which vendor's alerts to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PayloadFormat {
    /// The spec's generic shape (an e-mail gateway's phishing alert).
    Generic,
    /// A Microsoft Graph security alert from Defender for Office 365.
    Defender,
    /// A CrowdStrike Falcon DetectionSummaryEvent.
    Crowdstrike,
    /// A Splunk webhook alert action.
    Splunk,
    /// The four above in turn.
    Mixed,
}

impl PayloadFormat {
    /// The name, as on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadFormat::Generic => "generic",
            PayloadFormat::Defender => "defender",
            PayloadFormat::Crowdstrike => "crowdstrike",
            PayloadFormat::Splunk => "splunk",
            PayloadFormat::Mixed => "mixed",
        }
    }
}

/// `--alert-ids`: how the unique alert ids of a run are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AlertIds {
    /// `<run>-<n>`: delivery numbers in order, so each new alert's dedupe key lands next to the
    /// last one in the store's unique index (the bench's figures before this choice existed).
    Sequential,
    /// `<16 hex digits>-<run>`, the number scrambled one-to-one and first: no two alike and no
    /// order, as vendors' own ids (GUIDs, hashes) are, so each new key lands anywhere in the
    /// index, among the keys of earlier runs too.
    Random,
}

impl AlertIds {
    /// The name, as on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertIds::Sequential => "sequential",
            AlertIds::Random => "random",
        }
    }
}

/// `n` scrambled by a bijection of the 64-bit integers (SplitMix64's finalizer: each step, a
/// xor-shift or a multiplication by an odd number, can be undone), so distinct numbers give
/// distinct ids with no order between them.
fn scramble(n: u64) -> u64 {
    let mut z = n;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Replaced by the delivery's unique id.
const ID: &str = "{ID}";
/// Replaced by the filler.
const PAD: &str = "{PAD}";

/// An e-mail gateway's phishing alert in the spec's generic shape (`generic-full.json`, trimmed).
const GENERIC: &str = r#"{"event_type":"email_threat","timestamp":"2024-06-10T15:01:12Z","data":{"alert_id":"{ID}","severity":"high","details":{"title":"Credential phishing message delivered","sender":"billing@invoices.example.net","recipients":["jdoe@corp.example.com"],"sender_ip":"198.51.100.77","padding":"{PAD}"}}}"#;

/// A Graph alerts_v2 alert with one analysed message (`defender-o365-phish-typical.json`, trimmed).
const DEFENDER: &str = r##"{"@odata.type":"#microsoft.graph.security.alert","id":"{ID}","severity":"medium","title":"Email messages containing malicious URL removed after delivery","createdDateTime":"2024-06-10T15:01:44.2133817Z","evidence":[{"@odata.type":"#microsoft.graph.security.analyzedMessageEvidence","senderIp":"198.51.100.77","recipientEmailAddress":"jdoe@corp.example.com"}],"padding":"{PAD}"}"##;

/// A legacy Falcon detection (`crowdstrike-detection-summary-high.json`, trimmed).
const CROWDSTRIKE: &str = r#"{"metadata":{"eventType":"DetectionSummaryEvent","eventCreationTime":1718031512000},"event":{"DetectId":"ldt:bec7b02d059cd42f60128272db10e8ec:{ID}","DetectName":"Suspicious Activity","Severity":4,"SeverityName":"High","ComputerName":"WS-FIN-0427","UserName":"jdoe","LocalIP":"192.0.2.57","FileName":"powershell.exe","padding":"{PAD}"}}"#;

/// The six keys of Splunk's webhook body (`splunk-alert-failed-login.json`, trimmed).
const SPLUNK: &str = r#"{"sid":"scheduler__admin__search__{ID}","search_name":"Failed Login Alert","app":"search","owner":"admin","results_link":"https://splunk.example.com:8000/app/search/@go?sid=scheduler__admin__search__{ID}","result":{"_time":"1718031540","host":"dc01.corp.example.com","user":"jdoe","src_ip":"203.0.113.45","action":"failure","padding":"{PAD}"}}"#;

/// Filler text: words and spaces, which no entity rule takes for an address, host or hash.
const FILLER: &str = "bench filler text ";

/// Digits of a typical delivery number, for sizing the filler.
const TYPICAL_DIGITS: usize = 6;

/// Hex digits of a random id's scrambled number (all of a `u64`).
const RANDOM_DIGITS: usize = 16;

enum Part {
    Text(&'static str),
    Id,
    Pad,
}

struct Template {
    parts: Vec<Part>,
    pad: String,
}

impl Template {
    fn new(text: &'static str, target_bytes: usize, id_len: usize) -> Template {
        let mut parts = Vec::new();
        let mut rest = text;
        loop {
            let next = [(rest.find(ID), ID), (rest.find(PAD), PAD)]
                .into_iter()
                .filter_map(|(at, marker)| Some((at?, marker)))
                .min_by_key(|(at, _)| *at);
            let Some((i, marker)) = next else { break };
            parts.push(Part::Text(&rest[..i]));
            parts.push(if marker == ID { Part::Id } else { Part::Pad });
            rest = &rest[i + marker.len()..];
        }
        parts.push(Part::Text(rest));
        let fixed: usize = parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.len(),
                Part::Id => id_len,
                Part::Pad => 0,
            })
            .sum();
        let pad_len = target_bytes.saturating_sub(fixed);
        let pad = FILLER.repeat(pad_len / FILLER.len() + 1)[..pad_len].to_string();
        Template { parts, pad }
    }

    fn render(&self, id: &str) -> Vec<u8> {
        let len: usize = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.len(),
                Part::Id => id.len(),
                Part::Pad => self.pad.len(),
            })
            .sum();
        let mut out = Vec::with_capacity(len);
        for p in &self.parts {
            out.extend_from_slice(match p {
                Part::Text(t) => t.as_bytes(),
                Part::Id => id.as_bytes(),
                Part::Pad => self.pad.as_bytes(),
            });
        }
        out
    }
}

/// The bodies of one bench run: delivery `n` gets the id `<run>-<n>` (or `n` scrambled first, see
/// [`AlertIds`]) and, with `mixed`, the format `n mod 4`.
pub struct Payloads {
    run: String,
    ids: AlertIds,
    templates: Vec<Template>,
}

impl Payloads {
    /// Bodies of `format` padded to about `target_bytes` (never below the bare template, which
    /// is 300 to 400 bytes); `run` makes the ids unique to this run.
    pub fn new(format: PayloadFormat, target_bytes: usize, run: &str, ids: AlertIds) -> Payloads {
        let formats = match format {
            PayloadFormat::Mixed => {
                vec![PayloadFormat::Generic, PayloadFormat::Defender, PayloadFormat::Crowdstrike, PayloadFormat::Splunk]
            }
            one => vec![one],
        };
        let id_len = run.len()
            + 1
            + match ids {
                AlertIds::Sequential => TYPICAL_DIGITS,
                AlertIds::Random => RANDOM_DIGITS,
            };
        let templates = formats
            .into_iter()
            .map(|f| {
                let text = match f {
                    PayloadFormat::Defender => DEFENDER,
                    PayloadFormat::Crowdstrike => CROWDSTRIKE,
                    PayloadFormat::Splunk => SPLUNK,
                    PayloadFormat::Generic | PayloadFormat::Mixed => GENERIC,
                };
                Template::new(text, target_bytes, id_len)
            })
            .collect();
        Payloads { run: run.to_string(), ids, templates }
    }

    fn template(&self, n: u64) -> &Template {
        &self.templates[(n % self.templates.len() as u64) as usize]
    }

    /// The alert id of delivery number `n`.
    pub fn alert_id(&self, n: u64) -> String {
        match self.ids {
            AlertIds::Sequential => format!("{}-{n}", self.run),
            AlertIds::Random => format!("{:0RANDOM_DIGITS$x}-{}", scramble(n), self.run),
        }
    }

    /// The body of delivery number `n`.
    pub fn body(&self, n: u64) -> Vec<u8> {
        self.template(n).render(&self.alert_id(n))
    }

    /// The smallest and largest body of a typical delivery number, over the formats in use.
    pub fn body_bytes(&self) -> (usize, usize) {
        let typical = 10u64.pow(TYPICAL_DIGITS as u32 - 1);
        let sizes: Vec<usize> = (0..self.templates.len() as u64).map(|i| self.body(typical + i).len()).collect();
        (sizes.iter().copied().min().unwrap_or(0), sizes.iter().copied().max().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::BTreeMap;
    use tw_core::formats::{Format, detect, normalize};

    const ALL: [PayloadFormat; 4] = [PayloadFormat::Generic, PayloadFormat::Defender, PayloadFormat::Crowdstrike, PayloadFormat::Splunk];

    fn expected(f: PayloadFormat) -> Format {
        match f {
            PayloadFormat::Defender => Format::Defender,
            PayloadFormat::Crowdstrike => Format::Crowdstrike,
            PayloadFormat::Splunk => Format::Splunk,
            _ => Format::Generic,
        }
    }

    #[test]
    fn each_template_is_detected_as_its_format_with_the_id_as_alert_id() {
        for f in ALL {
            for ids in [AlertIds::Sequential, AlertIds::Random] {
                for size in [300, 1024, 4096, 256 * 1024] {
                    let p = Payloads::new(f, size, "bench-abc", ids);
                    let body = p.body(123456);
                    let v: Value = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{f:?} {size}: {e}"));
                    let obj = v.as_object().unwrap();
                    assert_eq!(detect(obj), expected(f), "{f:?}");
                    let alert = normalize(&v, None, &BTreeMap::new()).unwrap();
                    let id = alert.external_id.unwrap_or_default();
                    assert!(id.contains(&p.alert_id(123456)), "{f:?} {ids:?}: external id {id}");
                    assert!(!alert.title.is_empty());
                }
            }
        }
        assert_eq!(Payloads::new(PayloadFormat::Generic, 0, "bench-abc", AlertIds::Sequential).alert_id(123456), "bench-abc-123456");
    }

    /// Random ids never repeat (the scramble is one-to-one) and follow no order: about half of
    /// consecutive pairs go down, where sequential ids of the same width always go up.
    #[test]
    fn random_ids_are_unique_and_unordered() {
        let p = Payloads::new(PayloadFormat::Generic, 512, "r", AlertIds::Random);
        let ids: Vec<String> = (0..100_000).map(|n| p.alert_id(n)).collect();
        assert!(ids.iter().all(|id| id.len() == RANDOM_DIGITS + "-r".len() && id.ends_with("-r")), "{}", ids[0]);
        assert_eq!(ids.iter().collect::<std::collections::HashSet<_>>().len(), ids.len());
        let down = ids.windows(2).filter(|w| w[1] < w[0]).count();
        assert!((40_000..60_000).contains(&down), "{down} of 99,999 pairs go down");
    }

    #[test]
    fn bodies_are_padded_to_about_the_asked_size() {
        for f in ALL {
            let bare = Payloads::new(f, 0, "bench-abc", AlertIds::Sequential).body(100000).len();
            assert!(bare <= 420, "{f:?} template is {bare} bytes");
            for ids in [AlertIds::Sequential, AlertIds::Random] {
                for size in [1024, 4096, 65536, 256 * 1024] {
                    let len = Payloads::new(f, size, "bench-abc", ids).body(100000).len();
                    assert!(len.abs_diff(size) <= 16, "{f:?} {ids:?}: asked {size}, got {len}");
                }
            }
        }
    }

    #[test]
    fn ids_are_unique_and_mixed_takes_turns() {
        let p = Payloads::new(PayloadFormat::Mixed, 512, "r", AlertIds::Sequential);
        let detected = |n: u64| {
            let v: Value = serde_json::from_slice(&p.body(n)).unwrap();
            detect(v.as_object().unwrap())
        };
        assert_eq!(
            (0..5).map(detected).collect::<Vec<_>>(),
            vec![Format::Generic, Format::Defender, Format::Crowdstrike, Format::Splunk, Format::Generic]
        );
        assert_ne!(p.body(0), p.body(4));
        let (min, max) = p.body_bytes();
        assert!(min <= max && max <= 600, "{min} {max}");
    }
}
