//! The console's page frame and the small pieces every page uses: the layout with its navigation,
//! times, the CSRF field, a recipe to paste into a sender. Pure functions of their arguments
//! (maud escapes every value), so unit tests reach them without a server.

use super::assets::{CSS, JS};
use chrono::{DateTime, SecondsFormat, Utc};
use maud::{DOCTYPE, Markup, html};

/// The sections the navigation links to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Sources,
    Deliveries,
    Incidents,
    Playbooks,
    /// Pages outside the sections (sign-in, errors).
    None,
}

impl Nav {
    const ALL: [(Nav, &'static str, &'static str); 5] = [
        (Nav::Overview, "Overview", "/console"),
        (Nav::Sources, "Sources", "/console/sources"),
        (Nav::Deliveries, "Deliveries", "/console/deliveries"),
        (Nav::Incidents, "Incidents", "/console/incidents"),
        (Nav::Playbooks, "Playbooks", "/console/playbooks"),
    ];
}

/// Who is looking at a page, as far as the page needs to know.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The API key's name and prefix (never the key).
    pub key_name: String,
    pub key_prefix: String,
    /// An admin key: the page shows change controls.
    pub admin: bool,
    /// The session's CSRF token, for every form.
    pub csrf: String,
}

/// The frame of every page: head, navigation (when signed in), the content.
pub fn layout(title: &str, nav: Nav, viewer: Option<&Viewer>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · tw console" }
                // No icon to fetch: a browser would otherwise ask for /favicon.ico on every page.
                link rel="icon" href="data:,";
                link rel="stylesheet" href=(CSS.path());
                script src=(JS.path()) defer {}
            }
            body {
                a.skip href="#content" { "Skip to content" }
                header.top {
                    a.brand href="/console" { "tw console" }
                    @if let Some(v) = viewer {
                        nav.main aria-label="Main" {
                            ul {
                                @for (item, label, href) in Nav::ALL {
                                    li { a href=(href) aria-current=[(item == nav).then_some("page")] { (label) } }
                                }
                            }
                        }
                        div.who {
                            span { "Signed in with " code { (v.key_prefix) } " (" (v.key_name) ", " (if v.admin { "admin" } else { "read" }) ")" }
                            form method="post" action="/console/logout" {
                                (csrf_field(&v.csrf))
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main id="content" { (content) }
            }
        }
    }
}

/// The hidden field that carries the session's CSRF token in every form.
pub fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// A moment: UTC in the text and on hover, machine-readable in `datetime` (the script shows the
/// text in the viewer's zone).
pub fn time(at: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339_opts(SecondsFormat::Secs, true)) title=(at.format("%Y-%m-%d %H:%M:%S UTC").to_string()) {
            (at.format("%Y-%m-%d %H:%M UTC").to_string())
        }
    }
}

/// A moment that may not have happened yet (`never` when it has not).
pub fn maybe_time(at: Option<DateTime<Utc>>, never: &str) -> Markup {
    match at {
        Some(at) => time(at),
        None => html! { span.muted { (never) } },
    }
}

/// A page that says what went wrong (status pages: 401, 403, 404, 429, 5xx).
pub fn message_page(title: &str, message: &str, viewer: Option<&Viewer>) -> Markup {
    layout(
        title,
        Nav::None,
        viewer,
        html! {
            h1 { (title) }
            div.notice.error role="alert" { (message) }
            p { a href="/console" { "Back to the console" } }
        },
    )
}

/// The API's objections to a submission, one per field (`steps.enrich.action: ...`), after `lead`.
pub fn problems(lead: &str, details: &[crate::api::FieldError]) -> Markup {
    html! {
        div.notice.error role="alert" {
            (lead)
            ul.errors { @for p in details { li { @if !p.field.is_empty() { code { (p.field) } ": " } (p.message) } } }
        }
    }
}

/// What to paste into a sender, one line per field; values can be copied with one click.
pub fn recipe(lines: &[crate::sources::RecipeLine]) -> Markup {
    html! {
        dl.recipe {
            @for l in lines {
                dt { (l.label) }
                dd { code data-copy=(l.label) { (l.value) } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer(admin: bool) -> Viewer {
        Viewer { key_name: "ops <team>".into(), key_prefix: "tw_abcd".into(), admin, csrf: "t0ken".into() }
    }

    #[test]
    fn times_are_machine_readable_with_utc_on_hover() {
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let t = time(at).into_string();
        assert_eq!(t, r#"<time datetime="2027-01-15T08:00:00Z" title="2027-01-15 08:00:00 UTC">2027-01-15 08:00 UTC</time>"#);
        assert!(maybe_time(None, "never").into_string().contains("never"));
    }

    #[test]
    fn the_layout_links_hashed_assets_and_has_no_inline_script_or_style() {
        let page = layout("Sources", Nav::Sources, Some(&viewer(true)), html! { p { "x" } }).into_string();
        assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
        assert!(page.contains(&format!(r#"href="{}""#, CSS.path())), "{page}");
        assert!(page.contains(&format!(r#"<script src="{}" defer></script>"#, JS.path())), "{page}");
        assert!(!page.contains("<style") && !page.contains(" style="), "no inline style: {page}");
        assert_eq!(page.matches("<script").count(), 1, "one script, by src: {page}");
        assert!(!page.contains("onclick=") && !page.contains("onsubmit="), "no inline handlers");
        assert!(page.contains(r#"<a href="/console/sources" aria-current="page">Sources</a>"#), "{page}");
        assert!(page.contains(r#"<a href="/console">Overview</a>"#), "{page}");
        // The sign-out form carries the token; names are escaped.
        assert!(page.contains(r#"<input type="hidden" name="csrf" value="t0ken">"#), "{page}");
        assert!(page.contains("ops &lt;team&gt;") && page.contains("admin"), "{page}");
    }

    #[test]
    fn problems_name_their_field() {
        let html = problems(
            "Not valid:",
            &[crate::api::FieldError::new("steps.a.action", "unknown <x>"), crate::api::FieldError::new("", "whole")],
        )
        .into_string();
        assert!(html.contains("Not valid:") && html.contains("<li><code>steps.a.action</code>: unknown &lt;x&gt;</li>"), "{html}");
        assert!(html.contains("<li>whole</li>"), "{html}");
        let page = layout("P", Nav::Playbooks, Some(&viewer(false)), html! {}).into_string();
        assert!(page.contains(r#"<a href="/console/playbooks" aria-current="page">Playbooks</a>"#), "{page}");
    }

    #[test]
    fn signed_out_pages_have_no_navigation() {
        let page = message_page("Not signed in", "Sign in <first>", None).into_string();
        assert!(!page.contains("aria-label=\"Main\""), "{page}");
        assert!(page.contains("Sign in &lt;first&gt;"), "{page}");
    }

    #[test]
    fn a_recipe_lists_each_line_copyably() {
        let name = tw_core::SourceName::parse("kibana").unwrap();
        let lines = crate::sources::recipe(
            &tw_core::Verification::HeaderToken { header: tw_core::verification::HeaderName::parse("X-Api-Key").unwrap() },
            "https://tw.example.com",
            &name,
            "s3cret-value",
        );
        let html = recipe(&lines).into_string();
        assert!(html.contains(r#"<code data-copy="URL">https://tw.example.com/api/webhooks/kibana</code>"#), "{html}");
        assert!(html.contains(r#"<code data-copy="Header name">X-Api-Key</code>"#), "{html}");
        assert!(html.contains("s3cret-value"), "{html}");
    }
}
