//! Services, reports, levels and the parsers that build them from user input.

use crate::CountryCode;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A rejected field of user input: which field, and why, in words a client can show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// `^[first][a-z0-9-]*$` of at most `max` bytes, `first` judging the first byte.
fn is_token(s: &str, max: usize, first: impl Fn(u8) -> bool) -> bool {
    let bytes = s.as_bytes();
    bytes.first().is_some_and(|b| first(*b))
        && bytes.len() <= max
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// A service's identifier in URLs: `^[a-z0-9][a-z0-9-]{0,62}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Slug(String);

impl Slug {
    pub fn parse(s: &str) -> Result<Self, String> {
        if is_token(s, 63, |b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
            Ok(Self(s.to_owned()))
        } else {
            Err("must match ^[a-z0-9][a-z0-9-]{0,62}$".into())
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A kind of problem a reporter can pick ("login", "messaging"):
/// `^[a-z][a-z0-9-]{0,31}$`, so it is safe in URLs, CSV and comma lists.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ProblemKind(String);

impl ProblemKind {
    pub fn parse(s: &str) -> Result<Self, String> {
        if is_token(s, 32, |b| b.is_ascii_lowercase()) {
            Ok(Self(s.to_owned()))
        } else {
            Err("must match ^[a-z][a-z0-9-]{0,31}$".into())
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Problem kinds a service accepts when its catalogue entry names none.
pub const DEFAULT_PROBLEMS: [&str; 6] = [
    "app",
    "website",
    "login",
    "connection",
    "messaging",
    "other",
];

/// The problem list of a service: 1 to 32 distinct kinds, order kept (it is
/// the order the report button shows them in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ProblemList(Vec<ProblemKind>);

impl ProblemList {
    pub const MAX: usize = 32;

    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        if items.is_empty() {
            return Err("must list at least one problem kind".into());
        }
        if items.len() > Self::MAX {
            return Err(format!("at most {} problem kinds", Self::MAX));
        }
        let mut out: Vec<ProblemKind> = Vec::with_capacity(items.len());
        for item in items {
            let kind = ProblemKind::parse(item.as_ref())
                .map_err(|e| format!("{:?}: {e}", item.as_ref()))?;
            if out.contains(&kind) {
                return Err(format!("{:?} is listed twice", kind.as_str()));
            }
            out.push(kind);
        }
        Ok(Self(out))
    }

    pub fn defaults() -> Self {
        Self(
            DEFAULT_PROBLEMS
                .iter()
                .map(|p| ProblemKind(p.to_string()))
                .collect(),
        )
    }

    /// Parses the comma-separated form the databases keep.
    pub fn from_stored(s: &str) -> Result<Self, String> {
        let items: Vec<&str> = s.split(',').filter(|p| !p.is_empty()).collect();
        Self::parse(&items)
    }

    pub fn to_stored(&self) -> String {
        self.0
            .iter()
            .map(ProblemKind::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn contains(&self, kind: &str) -> bool {
        self.0.iter().any(|p| p.as_str() == kind)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ProblemKind> {
        self.0.iter()
    }

    /// Adds a kind if missing (imports may name kinds a service does not list yet).
    pub fn with(mut self, kind: ProblemKind) -> Result<Self, String> {
        if !self.0.contains(&kind) {
            if self.0.len() >= Self::MAX {
                return Err(format!("at most {} problem kinds", Self::MAX));
            }
            self.0.push(kind);
        }
        Ok(self)
    }
}

/// Free-text city of a report: trimmed, 1 to 80 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct City(String);

impl City {
    pub const MAX_CHARS: usize = 80;

    /// `Ok(None)` for a blank city: reporters often send an empty field.
    pub fn parse(s: &str) -> Result<Option<Self>, String> {
        let t = s.trim();
        if t.is_empty() {
            return Ok(None);
        }
        let n = t.chars().count();
        if n > Self::MAX_CHARS {
            return Err(format!(
                "at most {} characters after trimming, got {n}",
                Self::MAX_CHARS
            ));
        }
        if t.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Some(Self(t.to_owned())))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A service's display name: trimmed, 1 to 100 characters, no control characters.
pub fn parse_name(s: &str) -> Result<String, String> {
    parse_text(s, 100)
}

/// An optional category ("messaging", "banks"): trimmed, at most 40 characters.
pub fn parse_category(s: &str) -> Result<Option<String>, String> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    parse_text(s, 40).map(Some)
}

/// An optional homepage: an absolute http(s) URL of at most 300 characters.
pub fn parse_url(s: &str) -> Result<Option<String>, String> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let rest = t
        .strip_prefix("https://")
        .or_else(|| t.strip_prefix("http://"));
    match rest {
        Some(r)
            if !r.is_empty()
                && t.chars().count() <= 300
                && !t.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Ok(Some(t.to_owned()))
        }
        _ => Err("must be an absolute http(s) URL of at most 300 characters".into()),
    }
}

fn parse_text(s: &str, max: usize) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("must not be empty".into());
    }
    if t.chars().count() > max {
        return Err(format!("at most {max} characters"));
    }
    if t.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(t.to_owned())
}

/// How bad things are for a service right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Outage,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Outage => "outage",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ok" => Some(Level::Ok),
            "warning" => Some(Level::Warning),
            "outage" => Some(Level::Outage),
            _ => None,
        }
    }
}

/// A service in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub id: i64,
    pub slug: Slug,
    pub name: String,
    pub category: Option<String>,
    pub url: Option<String>,
    pub problems: ProblemList,
}

/// A service to create: already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewService {
    pub slug: Slug,
    pub name: String,
    pub category: Option<String>,
    pub url: Option<String>,
    pub problems: ProblemList,
}

/// Changes to a service; `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServicePatch {
    pub name: Option<String>,
    pub category: Option<Option<String>>,
    pub url: Option<Option<String>>,
    pub problems: Option<ProblemList>,
}

impl ServicePatch {
    pub fn apply(&self, s: &mut Service) {
        if let Some(n) = &self.name {
            s.name.clone_from(n);
        }
        if let Some(c) = &self.category {
            s.category.clone_from(c);
        }
        if let Some(u) = &self.url {
            s.url.clone_from(u);
        }
        if let Some(p) = &self.problems {
            s.problems = p.clone();
        }
    }
}

/// A report ready to be stored: every field parsed, counted or not decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRecord {
    pub service_id: i64,
    pub problem: ProblemKind,
    pub country: Option<CountryCode>,
    pub city: Option<City>,
    /// Salted hash of the client's address (and client id): never the address.
    pub client_hash: [u8; 16],
    /// Salted hash of the address alone (the per-address cap's key); `None`
    /// for imported history.
    pub address_hash: Option<[u8; 16]>,
    pub counted: bool,
    pub received_at: chrono::DateTime<chrono::Utc>,
}

/// The scope a count or incident belongs to: the whole service, or one country.
pub const GLOBAL_SCOPE: &str = "global";

/// Seconds since the epoch, floored to the minute.
pub fn minute_of(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp().div_euclid(60) * 60
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_accepts_the_spec_pattern_and_nothing_else() {
        for ok in ["whatsapp", "a", "x-1", "0day", &"a".repeat(63)] {
            assert!(Slug::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "A", "a_b", "a b", "é", &"a".repeat(64)] {
            assert!(Slug::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn city_is_trimmed_bounded_and_blank_means_none() {
        assert_eq!(City::parse("  Paris ").unwrap().unwrap().as_str(), "Paris");
        assert_eq!(City::parse("   ").unwrap(), None);
        assert!(City::parse(&"é".repeat(80)).unwrap().is_some());
        assert!(City::parse(&"é".repeat(81)).is_err());
        assert!(City::parse("Par\u{0}is").is_err());
    }

    #[test]
    fn problem_list_rejects_duplicates_and_round_trips_through_storage() {
        assert!(ProblemList::parse(&["app", "app"]).is_err());
        assert!(ProblemList::parse::<&str>(&[]).is_err());
        assert!(ProblemList::parse(&["App"]).is_err());
        let l = ProblemList::parse(&["login", "app"]).unwrap();
        assert_eq!(ProblemList::from_stored(&l.to_stored()).unwrap(), l);
        assert!(l.contains("login") && !l.contains("other"));
        let l = l.with(ProblemKind::parse("other").unwrap()).unwrap();
        assert_eq!(l.to_stored(), "login,app,other");
    }

    #[test]
    fn url_must_be_absolute_http() {
        assert_eq!(parse_url("").unwrap(), None);
        assert!(parse_url("https://www.whatsapp.com").unwrap().is_some());
        assert!(parse_url("javascript:alert(1)").is_err());
        assert!(parse_url("https://").is_err());
        assert!(parse_url("https://a b").is_err());
    }

    #[test]
    fn minute_of_floors_including_before_the_epoch() {
        let t = chrono::DateTime::from_timestamp(119, 0).unwrap();
        assert_eq!(minute_of(t), 60);
        let t = chrono::DateTime::from_timestamp(-1, 0).unwrap();
        assert_eq!(minute_of(t), -60);
    }

    #[test]
    fn levels_order_by_severity() {
        assert!(Level::Outage > Level::Warning && Level::Warning > Level::Ok);
        assert_eq!(Level::parse(Level::Warning.as_str()), Some(Level::Warning));
    }
}
