//! The catalogue seeded on first start: bundled, or `DOWNWATCH_SERVICES_FILE`.

use anyhow::{Context, bail};
use downwatch_core::{NewService, ProblemList, Slug, parse_category, parse_name, parse_url};
use serde::Deserialize;
use std::path::Path;

const BUNDLED: &str = include_str!("../../../catalogue/services.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(alias = "services")]
    service: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    slug: String,
    name: String,
    category: Option<String>,
    url: Option<String>,
    problems: Option<Vec<String>>,
}

/// The bundled catalogue.
pub fn bundled() -> anyhow::Result<Vec<NewService>> {
    parse(BUNDLED, "the bundled catalogue", false)
}

/// A catalogue file: TOML (`[[service]]` tables) or, by its extension, JSON
/// (`{"services": [...]}`).
pub fn from_file(path: &Path) -> anyhow::Result<Vec<NewService>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("DOWNWATCH_SERVICES_FILE: cannot read {}", path.display()))?;
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    parse(
        &text,
        &format!("DOWNWATCH_SERVICES_FILE {}", path.display()),
        json,
    )
}

fn parse(text: &str, origin: &str, json: bool) -> anyhow::Result<Vec<NewService>> {
    let file: File = if json {
        serde_json::from_str(text).with_context(|| format!("{origin}: not a valid catalogue"))?
    } else {
        toml::from_str(text).with_context(|| format!("{origin}: not a valid catalogue"))?
    };
    let mut out: Vec<NewService> = Vec::with_capacity(file.service.len());
    for (i, e) in file.service.into_iter().enumerate() {
        let at = |field: &str, msg: String| {
            anyhow::anyhow!("{origin}: service #{} ({}): {field} {msg}", i + 1, e.slug)
        };
        let problems = match &e.problems {
            None => ProblemList::defaults(),
            Some(p) => ProblemList::parse(p).map_err(|m| at("problems", m))?,
        };
        let s = NewService {
            slug: Slug::parse(&e.slug).map_err(|m| at("slug", m))?,
            name: parse_name(&e.name).map_err(|m| at("name", m))?,
            category: parse_category(e.category.as_deref().unwrap_or(""))
                .map_err(|m| at("category", m))?,
            url: parse_url(e.url.as_deref().unwrap_or("")).map_err(|m| at("url", m))?,
            problems,
        };
        if out.iter().any(|o| o.slug == s.slug) {
            bail!(
                "{origin}: service #{}: slug {} is listed twice",
                i + 1,
                s.slug
            );
        }
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_catalogue_is_valid_broad_and_uses_fitting_problem_kinds() {
        let all = bundled().unwrap();
        assert!(all.len() >= 50, "{} services", all.len());
        for cat in [
            "messaging",
            "social",
            "video",
            "games",
            "banks",
            "cloud",
            "isp",
        ] {
            assert!(
                all.iter().any(|s| s.category.as_deref() == Some(cat)),
                "no {cat} service"
            );
        }
        let whatsapp = all.iter().find(|s| s.slug.as_str() == "whatsapp").unwrap();
        assert!(whatsapp.problems.contains("messaging"));
        let chase = all.iter().find(|s| s.slug.as_str() == "chase").unwrap();
        assert!(chase.problems.contains("mobile-banking"));
    }

    #[test]
    fn a_bad_entry_is_reported_with_its_position_and_field() {
        let e = parse("[[service]]\nslug = \"ok\"\nname = \"Ok\"\n[[service]]\nslug = \"Bad Slug\"\nname = \"x\"\n", "test", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("service #2") && e.contains("slug"), "{e}");
        let e = parse(
            "{\"services\": [{\"slug\": \"a\", \"name\": \"A\", \"problems\": []}]}",
            "test",
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("problems"), "{e}");
    }
}
