//! The Atom feeds: every service's incidents and one service's, parsed as
//! Atom, and linked from the pages' `<head>`.

use crate::both_modes;
use crate::detector::{app, burst, live, now, stepped};
use crate::helpers::Backing;
use std::str::FromStr;

both_modes!(the_feed_of_all_incidents_parses_and_the_pages_link_to_it);

async fn the_feed_of_all_incidents_parses_and_the_pages_link_to_it(b: Backing) {
    let app = app(&b).await;
    let mut detector = live(&app, "feeds");
    assert!(stepped(&detector.tick(now()).await.unwrap()));
    burst(&app, "chatapp", 40, Some("FR")).await;
    let (_, last) = burst(&app, "quiet", 40, None).await;
    assert!(stepped(&detector.tick(last + 63).await.unwrap()));
    assert!(stepped(&detector.tick(last + 3 * 3600).await.unwrap()));

    let r = app.get("/api/v1/incidents.atom").await;
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/atom+xml")
    );
    let text = r.text().await.unwrap();
    roxmltree::Document::parse(&text).expect("well-formed XML");
    let feed = atom_syndication::Feed::from_str(&text).expect("an Atom feed");
    assert!(feed.id().ends_with("/api/v1/incidents.atom"));
    // Both services' incidents: chatapp's global and French ones, quiet's.
    let titles: Vec<&str> = feed.entries().iter().map(|e| e.title().as_str()).collect();
    assert_eq!(titles.len(), 3, "{titles:?}");
    assert_eq!(
        titles
            .iter()
            .filter(|t| t.starts_with("ChatApp: problems"))
            .count(),
        2
    );
    assert!(
        titles
            .iter()
            .any(|t| t.starts_with("ChatApp: problems in FR from"))
    );
    assert!(titles.iter().any(|t| t.starts_with("Quiet: problems from")));
    for e in feed.entries() {
        assert!(e.id().contains("/api/v1/incidents/"));
        assert!(e.links()[0].href().contains("/incidents/"));
        assert!(e.summary().unwrap().as_str().contains("Status: resolved"));
    }
    let links: Vec<(&str, &str)> = feed.links().iter().map(|l| (l.rel(), l.href())).collect();
    assert!(
        links
            .iter()
            .any(|(rel, href)| *rel == "self" && href.ends_with("/api/v1/incidents.atom"))
    );
    assert!(
        links
            .iter()
            .any(|(rel, href)| *rel == "alternate" && href.ends_with("/history"))
    );

    // One service's feed holds its own only.
    let one = app.get("/api/v1/services/quiet/incidents.atom").await;
    let one = atom_syndication::Feed::from_str(&one.text().await.unwrap()).unwrap();
    assert_eq!(one.entries().len(), 1);

    // Every page names the feed of all incidents; a service page its own too.
    let all = r#"<link rel="alternate" type="application/atom+xml" title="Incidents of every service" href="/api/v1/incidents.atom">"#;
    for page in ["/", "/history", "/services/chatapp"] {
        let html = app.get(page).await.text().await.unwrap();
        let head = html.split("</head>").next().unwrap();
        assert!(head.contains(all), "{page}: {head}");
    }
    let html = app.get("/services/chatapp").await.text().await.unwrap();
    let head = html.split("</head>").next().unwrap();
    assert!(
        head.contains(r#"href="/api/v1/services/chatapp/incidents.atom""#),
        "{head}"
    );
    let html = app.get("/").await.text().await.unwrap();
    assert!(
        !html
            .split("</head>")
            .next()
            .unwrap()
            .contains("/api/v1/services/")
    );
    app.stop().await;
}
