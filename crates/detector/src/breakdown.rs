//! What an incident's reports were about and where they came from: the
//! `top_problems` and `top_locations` of SPEC.md's incident JSON, from the
//! hourly facets (and the raw reports of the partial hours at the edges).
//! The read API shows them, and webhook deliveries carry them.

use crate::events::IncidentView;
use downwatch_core::GLOBAL_SCOPE;
use downwatch_store::{FacetCount, IncidentRecord, Storage, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Entries of the top problem and place lists of an incident.
pub const TOP: usize = 5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProblemShare {
    pub problem: String,
    pub share: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocationShare {
    pub country: Option<String>,
    pub city: Option<String>,
    pub share: f64,
}

/// SPEC.md's incident JSON: the incident and its breakdowns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentJson {
    #[serde(flatten)]
    pub view: IncidentView,
    pub top_problems: Vec<ProblemShare>,
    pub top_locations: Vec<LocationShare>,
}

fn share(n: i64, total: i64) -> f64 {
    if total <= 0 {
        0.0
    } else {
        (n as f64 / total as f64 * 1000.0).round() / 1000.0
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A place (country, city) and its reports.
pub type PlaceCount = (Option<String>, Option<String>, i64);

/// Problems and places of the reports in a range, largest first, with
/// their total.
pub fn tops(facets: Vec<FacetCount>, limit: usize) -> (i64, Vec<(String, i64)>, Vec<PlaceCount>) {
    let total: i64 = facets.iter().map(|f| f.counted).sum();
    let mut problems: BTreeMap<String, i64> = BTreeMap::new();
    let mut places: BTreeMap<(String, String), i64> = BTreeMap::new();
    for f in facets {
        *problems.entry(f.problem).or_default() += f.counted;
        *places.entry((f.country, f.city)).or_default() += f.counted;
    }
    let mut problems: Vec<(String, i64)> = problems.into_iter().collect();
    problems.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    problems.truncate(limit);
    let mut places: Vec<((String, String), i64)> = places
        .into_iter()
        .filter(|((country, _), _)| !country.is_empty())
        .collect();
    places.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    places.truncate(limit);
    let places = places
        .into_iter()
        .map(|((country, city), n)| (non_empty(country), non_empty(city), n))
        .collect();
    (total, problems, places)
}

/// An incident's breakdowns.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tops {
    pub top_problems: Vec<ProblemShare>,
    pub top_locations: Vec<LocationShare>,
}

/// The problems and places of the reports in an incident's scope from its
/// start to its end (or `now`).
pub async fn tops_of(
    storage: &dyn Storage,
    r: &IncidentRecord,
    now: i64,
) -> Result<Tops, StoreError> {
    let country = (r.scope != GLOBAL_SCOPE).then_some(r.scope.as_str());
    let end = r.ended_at.unwrap_or(now).max(r.started_at + 60);
    let facets = storage
        .facet_counts(r.service_id, country, r.started_at, end)
        .await?;
    let (total, problems, places) = tops(facets, TOP);
    Ok(Tops {
        top_problems: problems
            .into_iter()
            .map(|(problem, n)| ProblemShare {
                problem,
                share: share(n, total),
            })
            .collect(),
        top_locations: places
            .into_iter()
            .map(|(country, city, n)| LocationShare {
                country,
                city,
                share: share(n, total),
            })
            .collect(),
    })
}

impl IncidentJson {
    pub fn new(view: IncidentView, tops: Tops) -> Self {
        Self {
            view,
            top_problems: tops.top_problems,
            top_locations: tops.top_locations,
        }
    }
}

/// The incident (`id`, of service `slug`) as SPEC.md shows it, `now`
/// bounding an open one.
pub async fn incident_json(
    storage: &dyn Storage,
    id: i64,
    slug: &str,
    r: &IncidentRecord,
    now: i64,
) -> Result<IncidentJson, StoreError> {
    let tops = tops_of(storage, r, now).await?;
    Ok(IncidentJson::new(IncidentView::new(id, slug, r, now), tops))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facet(problem: &str, country: &str, city: &str, n: i64) -> FacetCount {
        FacetCount {
            problem: problem.into(),
            country: country.into(),
            city: city.into(),
            counted: n,
        }
    }

    #[test]
    fn tops_rank_problems_and_places_and_skip_unknown_places() {
        let (total, problems, places) = tops(
            vec![
                facet("login", "FR", "Paris", 5),
                facet("app", "FR", "", 3),
                facet("login", "", "", 4),
                facet("app", "DE", "Berlin", 1),
            ],
            2,
        );
        assert_eq!(total, 13);
        assert_eq!(problems, [("login".to_owned(), 9), ("app".to_owned(), 4)]);
        assert_eq!(
            places,
            [
                (Some("FR".to_owned()), Some("Paris".to_owned()), 5),
                (Some("FR".to_owned()), None, 3)
            ]
        );
    }
}
