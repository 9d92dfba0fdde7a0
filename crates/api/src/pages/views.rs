//! What the templates show: plain structs of display strings, and the
//! wording of levels, problems, places, times and durations.

use super::assets::ASSETS;
use askama::Template;
use chrono::DateTime;
use downwatch_core::{Level, Service};
use downwatch_store::IncidentRecord;

/// What every page's frame needs.
pub struct Layout {
    pub title: String,
    pub css: &'static str,
    pub js: &'static str,
    pub icon: &'static str,
    /// The slug and name of the page's service, for live updates.
    pub service: String,
    pub service_name: String,
}

impl Layout {
    pub fn new(title: &str, service: Option<&Service>) -> Self {
        let a = &*ASSETS;
        Self {
            title: title.to_owned(),
            css: &a.css.path,
            js: &a.js.path,
            icon: &a.icon.path,
            service: service.map(|s| s.slug.to_string()).unwrap_or_default(),
            service_name: service.map(|s| s.name.clone()).unwrap_or_default(),
        }
    }
}

/// A level as a badge: a class for its colour and words for it.
#[derive(Clone, Copy)]
pub struct Badge {
    pub level: &'static str,
    pub label: &'static str,
}

impl Badge {
    pub fn of(level: Level) -> Self {
        Self {
            level: level.as_str(),
            label: match level {
                Level::Ok => "No problems",
                Level::Warning => "Possible problems",
                Level::Outage => "Outage",
            },
        }
    }
}

pub struct DownRow {
    pub slug: String,
    pub name: String,
    pub badge: Badge,
    pub summary: String,
}

pub struct ServiceLink {
    pub slug: String,
    pub name: String,
    pub badge: Badge,
}

pub struct Group {
    pub category: String,
    pub services: Vec<ServiceLink>,
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomeTpl {
    pub layout: Layout,
    pub q: String,
    pub down: Vec<DownRow>,
    pub groups: Vec<Group>,
    pub matches: usize,
    pub generated: String,
}

pub struct Bucket {
    pub time: String,
    pub reports: i64,
    pub baseline: String,
}

/// A problem or place with its share of the reports.
pub struct Share {
    pub label: String,
    /// "1,234 reports" or empty when only the share is known.
    pub count: String,
    /// 0 to 100.
    pub percent: u32,
}

impl Share {
    pub fn new(label: String, n: i64, total: i64) -> Self {
        let percent = if total > 0 {
            (n as f64 / total as f64 * 100.0).round() as u32
        } else {
            0
        };
        Self {
            label,
            count: plural(n, "report", "reports"),
            percent,
        }
    }

    pub fn from_share(label: String, share: f64) -> Self {
        Self {
            label,
            count: String::new(),
            percent: (share * 100.0).round().clamp(0.0, 100.0) as u32,
        }
    }
}

pub struct IncidentLink {
    pub id: i64,
    pub text: String,
    pub open: bool,
}

impl IncidentLink {
    pub fn new(id: i64, name: &str, r: &IncidentRecord, now: i64) -> Self {
        let place = if r.scope == downwatch_core::GLOBAL_SCOPE {
            String::new()
        } else {
            format!(" in {}", r.scope)
        };
        let text = match r.ended_at {
            None => format!(
                "{name}: problems{place} since {} (ongoing, {})",
                day_time(r.started_at),
                duration(now - r.started_at)
            ),
            Some(end) => format!(
                "{name}: problems{place} on {}, lasting {}",
                day_time(r.started_at),
                duration(end - r.started_at)
            ),
        };
        Self {
            id,
            text,
            open: r.ended_at.is_none(),
        }
    }
}

pub struct Kind {
    pub value: String,
    pub label: String,
}

/// The outcome of a report sent through the page's form.
pub struct Notice {
    pub good: bool,
    pub text: String,
}

impl Notice {
    pub fn good(text: impl Into<String>) -> Self {
        Self {
            good: true,
            text: text.into(),
        }
    }
    pub fn bad(text: impl Into<String>) -> Self {
        Self {
            good: false,
            text: text.into(),
        }
    }
}

#[derive(Template)]
#[template(path = "service.html")]
pub struct ServiceTpl {
    pub layout: Layout,
    pub slug: String,
    pub name: String,
    pub badge: Badge,
    pub banner: String,
    pub buckets: Vec<Bucket>,
    pub total: i64,
    pub problems: Vec<Share>,
    pub places: Vec<Share>,
    pub recent: Vec<IncidentLink>,
    pub kinds: Vec<Kind>,
    pub notice: Option<Notice>,
    pub chart_alt: String,
}

#[derive(Template)]
#[template(path = "incident.html")]
pub struct IncidentTpl {
    pub layout: Layout,
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub title: String,
    pub open: bool,
    pub scope: String,
    pub started: String,
    pub detected: String,
    pub peak_at: String,
    pub peak: String,
    pub ended: String,
    pub duration: String,
    pub total: i64,
    pub problems: Vec<Share>,
    pub places: Vec<Share>,
    pub chart: String,
    pub chart_alt: String,
    pub embed: String,
    pub csv: String,
}

pub struct HistoryRow {
    pub id: i64,
    pub service: String,
    pub scope: String,
    pub started: String,
    pub ended: String,
    pub open: bool,
    pub duration: String,
    pub total: i64,
}

pub struct SelectOption {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "history.html")]
pub struct HistoryTpl {
    pub layout: Layout,
    pub services: Vec<SelectOption>,
    pub country: String,
    pub from: String,
    pub to: String,
    pub errors: Vec<String>,
    pub incidents: Vec<HistoryRow>,
    pub next: Option<String>,
    pub first_page: bool,
    pub csv: String,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorTpl {
    pub layout: Layout,
    pub title: &'static str,
    pub detail: String,
}

// ---------------------------------------------------------------- wording

pub fn plural(n: i64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// The words for a problem kind.
pub fn problem_label(kind: &str) -> String {
    match kind {
        "app" => "App".to_owned(),
        "website" => "Website".to_owned(),
        "login" => "Log-in".to_owned(),
        "connection" => "Connection".to_owned(),
        "messaging" => "Messaging".to_owned(),
        "other" => "Something else".to_owned(),
        other => {
            let mut c = other.chars();
            c.next().map_or_else(String::new, |f| {
                f.to_uppercase().collect::<String>() + c.as_str()
            })
        }
    }
    .replace(['-', '_'], " ")
    .replace("Log in", "Log-in")
}

pub fn place_label(country: Option<&str>, city: Option<&str>) -> String {
    match (city, country) {
        (Some(city), Some(c)) => format!("{city}, {c}"),
        (None, Some(c)) => c.to_owned(),
        (Some(city), None) => city.to_owned(),
        (None, None) => "Unknown".to_owned(),
    }
}

/// `07:02 UTC`.
pub fn hhmm(t: i64) -> String {
    DateTime::from_timestamp(t, 0)
        .unwrap_or_default()
        .format("%H:%M UTC")
        .to_string()
}

/// `2 Dec 2026, 07:02 UTC`.
pub fn day_time(t: i64) -> String {
    DateTime::from_timestamp(t, 0)
        .unwrap_or_default()
        .format("%-d %b %Y, %H:%M UTC")
        .to_string()
}

/// The time alone on the same day as `now`, else with the day.
pub fn when_short(t: i64, now: i64) -> String {
    if t.div_euclid(86_400) == now.div_euclid(86_400) {
        hhmm(t)
    } else {
        day_time(t)
    }
}

/// `2 h 05 min`, `14 min`, `3 days 2 h`.
pub fn duration(secs: i64) -> String {
    let m = secs.max(0) / 60;
    let (d, h, m) = (m / 1440, m % 1440 / 60, m % 60);
    if d > 0 {
        format!("{} {h} h", plural(d, "day", "days"))
    } else if h > 0 {
        format!("{h} h {m:02} min")
    } else {
        format!("{m} min")
    }
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Escapes text for an HTML attribute in a snippet we hand out.
pub fn attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_sentence() {
        assert_eq!(duration(14 * 60 + 5), "14 min");
        assert_eq!(duration(2 * 3600 + 5 * 60), "2 h 05 min");
        assert_eq!(duration(3 * 86_400 + 7200), "3 days 2 h");
    }

    #[test]
    fn problem_kinds_have_words() {
        assert_eq!(problem_label("login"), "Log-in");
        assert_eq!(problem_label("other"), "Something else");
        assert_eq!(problem_label("video-calls"), "Video calls");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(enc("a b&c=<d>"), "a%20b%26c%3D%3Cd%3E");
        assert_eq!(enc("s17i4"), "s17i4");
    }
}
