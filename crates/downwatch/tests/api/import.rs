//! `downwatch import`: historical reports loaded in bulk, with their
//! rollups, services and problem kinds, all or nothing.

use crate::both_modes;
use crate::helpers::{Backing, spawn_app};
use downwatch::import::{RowError, Summary};
use downwatch_core::{ProblemKind, ReportRecord};

both_modes!(
    import_stores_reports_rollups_services_and_problem_kinds,
    a_bad_row_is_named_and_nothing_of_the_file_is_stored,
    an_import_session_dropped_before_commit_leaves_nothing
);

/// 2024-03-01T00:00:00Z.
const DAY: i64 = 1_709_251_200;

const FILE: &str = "service,problem,country,city,reported_at
youtube,streaming,FR,Paris,2024-03-01T10:00:10Z
youtube,streaming,FR, Paris ,2024-03-01 10:00:50
youtube,app,,,2024-03-01T10:01:00Z
youtube,holograms,DE,,2024-03-01T11:30:00+00:00
brand-new-svc,login,,,2024-03-02T00:00:00Z
brand-new-svc,teleport,US,\"Washington, D.C.\",2024-03-02 00:00:30
";

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn import_stores_reports_rollups_services_and_problem_kinds(b: Backing) {
    let app = spawn_app(&b).await;
    let storage = app.state.storage.clone();
    let before = storage.get_service("youtube").await.unwrap().unwrap();
    assert!(!before.problems.contains("holograms"));
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "reports.csv", FILE);

    let summary = downwatch::import::run(storage.as_ref(), &path)
        .await
        .unwrap();
    assert_eq!(
        summary,
        Summary {
            rows: 6,
            services_created: 1,
            problems_added: 1
        }
    );
    assert_eq!(b.stored_reports().await, 6);
    assert_eq!(
        b.scalar_i64("SELECT COUNT(*) FROM reports WHERE counted")
            .await,
        6
    );
    assert_eq!(
        b.scalar_i64("SELECT COUNT(*) FROM reports WHERE country IS NULL AND city IS NULL")
            .await,
        2,
        "empty country and city are stored as absent"
    );
    for table in ["report_minutes", "report_hours", "report_days"] {
        assert_eq!(
            b.scalar_i64(&format!(
                "SELECT COALESCE(SUM(counted), 0) FROM {table} WHERE scope = 'global'"
            ))
            .await,
            6,
            "{table}"
        );
    }
    assert_eq!(
        b.scalar_i64("SELECT COALESCE(SUM(counted), 0) FROM report_facets")
            .await,
        6
    );

    // The created service: named by its slug, default kinds plus the new one.
    let created = storage.get_service("brand-new-svc").await.unwrap().unwrap();
    assert_eq!(created.name, "brand-new-svc");
    assert_eq!(
        created.problems.to_stored(),
        "app,website,login,connection,messaging,other,teleport"
    );
    // The existing one keeps its kinds, in order, and gains the new one.
    let youtube = storage.get_service("youtube").await.unwrap().unwrap();
    assert_eq!(
        youtube.problems.to_stored(),
        format!("{},holograms", before.problems.to_stored())
    );
    assert_eq!(youtube.name, before.name);

    let yt = youtube.id;
    let ten = DAY + 10 * 3600;
    assert_eq!(
        storage
            .counts(yt, "global", ten, ten + 7200, 60)
            .await
            .unwrap(),
        vec![(ten, 2), (ten + 60, 1), (ten + 5400, 1)]
    );
    assert_eq!(
        storage
            .counts(yt, "global", ten, ten + 7200, 3600)
            .await
            .unwrap(),
        vec![(ten, 3), (ten + 3600, 1)]
    );
    assert_eq!(
        storage
            .counts(yt, "global", DAY, DAY + 2 * 86_400, 86_400)
            .await
            .unwrap(),
        vec![(DAY, 4)]
    );
    assert_eq!(
        storage.counts(yt, "FR", ten, ten + 7200, 60).await.unwrap(),
        vec![(ten, 2)]
    );
    assert_eq!(
        storage
            .counts(yt, "DE", DAY, DAY + 86_400, 86_400)
            .await
            .unwrap(),
        vec![(DAY, 1)]
    );
    assert_eq!(
        storage
            .counts(created.id, "global", DAY, DAY + 2 * 86_400, 86_400)
            .await
            .unwrap(),
        vec![(DAY + 86_400, 2)]
    );
    assert_eq!(
        storage
            .counts(created.id, "US", DAY + 86_400, DAY + 2 * 86_400, 3600)
            .await
            .unwrap(),
        vec![(DAY + 86_400, 1)]
    );

    // Whole hours: served by the hourly facets.
    let facets: Vec<(String, String, String, i64)> = storage
        .facet_counts(yt, None, DAY, DAY + 86_400)
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.problem, f.country, f.city, f.counted))
        .collect();
    let f = |p: &str, co: &str, ci: &str, n: i64| (p.to_owned(), co.to_owned(), ci.to_owned(), n);
    assert_eq!(
        facets,
        vec![
            f("app", "", "", 1),
            f("holograms", "DE", "", 1),
            f("streaming", "FR", "Paris", 2)
        ]
    );
    let places = storage
        .facet_counts(created.id, Some("US"), DAY + 86_400, DAY + 86_400 + 3600)
        .await
        .unwrap();
    assert_eq!(places.len(), 1);
    assert_eq!(places[0].city, "Washington, D.C.");

    // The same file again adds to the rollups and changes no service.
    let again = downwatch::import::run(storage.as_ref(), &path)
        .await
        .unwrap();
    assert_eq!(
        again,
        Summary {
            rows: 6,
            services_created: 0,
            problems_added: 0
        }
    );
    assert_eq!(b.stored_reports().await, 12);
    assert_eq!(
        storage
            .counts(yt, "global", ten, ten + 7200, 60)
            .await
            .unwrap(),
        vec![(ten, 4), (ten + 60, 2), (ten + 5400, 2)]
    );
    assert_eq!(
        storage
            .counts(yt, "global", DAY, DAY + 86_400, 86_400)
            .await
            .unwrap(),
        vec![(DAY, 8)]
    );
    assert_eq!(
        storage.get_service("youtube").await.unwrap().unwrap(),
        youtube
    );
    app.stop().await;
}

async fn a_bad_row_is_named_and_nothing_of_the_file_is_stored(b: Backing) {
    let app = spawn_app(&b).await;
    let storage = app.state.storage.clone();
    let services_before = storage.list_services().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let head = "service,problem,country,city,reported_at\n\
                only-in-bad-file,login,FR,,2024-03-01T10:00:00Z\n\
                youtube,holograms,,,2024-03-01T10:00:00Z\n\
                youtube,app,,,2024-03-01T10:01:00Z\n";
    for (bad, field) in [
        ("youtube,app,,,yesterday\n", "reported_at"),
        ("youtube,app,France,,2024-03-01T10:02:00Z\n", "country"),
        ("You Tube,app,,,2024-03-01T10:02:00Z\n", "service"),
        ("youtube,Crash!,,,2024-03-01T10:02:00Z\n", "problem"),
    ] {
        let path = write(
            &dir,
            "bad.csv",
            &format!("{head}{bad}youtube,app,,,2024-03-01T10:03:00Z\n"),
        );
        let e = downwatch::import::run(storage.as_ref(), &path)
            .await
            .unwrap_err();
        let row = e
            .downcast_ref::<RowError>()
            .unwrap_or_else(|| panic!("not a row error: {e:#}"));
        assert_eq!((row.line, row.field), (5, Some(field)), "{e:#}");
        let text = format!("{e:#}");
        assert!(
            text.contains("bad.csv") && text.contains(&format!("line 5, field {field}:")),
            "{text}"
        );
    }
    assert_eq!(b.stored_reports().await, 0);
    for table in [
        "report_minutes",
        "report_hours",
        "report_days",
        "report_facets",
    ] {
        assert_eq!(
            b.scalar_i64(&format!("SELECT COUNT(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
    assert!(
        storage
            .get_service("only-in-bad-file")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(storage.list_services().await.unwrap(), services_before);

    // The same rows without the bad one go in.
    let path = write(&dir, "good.csv", head);
    let summary = downwatch::import::run(storage.as_ref(), &path)
        .await
        .unwrap();
    assert_eq!(summary.rows, 3);
    assert_eq!(summary.services_created, 1);
    assert_eq!(summary.problems_added, 1);
    assert_eq!(b.stored_reports().await, 3);
    app.stop().await;
}

/// A failure after services were created and reports written (here: the
/// session is dropped) leaves nothing behind: one transaction.
async fn an_import_session_dropped_before_commit_leaves_nothing(b: Backing) {
    let app = spawn_app(&b).await;
    let storage = app.state.storage.clone();
    let youtube = storage.get_service("youtube").await.unwrap().unwrap();
    {
        let mut session = storage.begin_import().await.unwrap();
        let created = session
            .create_service(&downwatch_core::NewService {
                slug: downwatch_core::Slug::parse("half-done").unwrap(),
                name: "half-done".to_owned(),
                category: None,
                url: None,
                problems: downwatch_core::ProblemList::defaults(),
            })
            .await
            .unwrap();
        let seen = session.get_service("half-done").await.unwrap().unwrap();
        assert_eq!(seen.id, created.id);
        let problems = youtube
            .problems
            .clone()
            .with(ProblemKind::parse("holograms").unwrap())
            .unwrap();
        session
            .update_service(
                "youtube",
                &downwatch_core::ServicePatch {
                    problems: Some(problems),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let reports: Vec<ReportRecord> = (0..1000)
            .map(|i| ReportRecord {
                service_id: if i % 2 == 0 { created.id } else { youtube.id },
                problem: ProblemKind::parse("app").unwrap(),
                country: None,
                city: None,
                client_hash: [0; 16],
                address_hash: None,
                counted: true,
                received_at: chrono::DateTime::from_timestamp(DAY + i, 0).unwrap(),
            })
            .collect();
        assert_eq!(session.add_reports(&reports[..600]).await.unwrap(), 600);
        assert_eq!(session.add_reports(&reports[600..]).await.unwrap(), 400);
        // Dropped here without commit.
    }
    assert_eq!(b.stored_reports().await, 0);
    assert_eq!(b.scalar_i64("SELECT COUNT(*) FROM report_minutes").await, 0);
    assert!(storage.get_service("half-done").await.unwrap().is_none());
    assert_eq!(
        storage.get_service("youtube").await.unwrap().unwrap(),
        youtube
    );

    // Committed, the same session's work is all there.
    let mut session = storage.begin_import().await.unwrap();
    let reports: Vec<ReportRecord> = (0..300)
        .map(|i| ReportRecord {
            service_id: youtube.id,
            problem: ProblemKind::parse("app").unwrap(),
            country: None,
            city: None,
            client_hash: [0; 16],
            address_hash: None,
            counted: true,
            received_at: chrono::DateTime::from_timestamp(DAY + 60 * i, 0).unwrap(),
        })
        .collect();
    session.add_reports(&reports).await.unwrap();
    session.commit().await.unwrap();
    assert_eq!(b.stored_reports().await, 300);
    assert_eq!(
        storage
            .counts(youtube.id, "global", DAY, DAY + 86_400, 3600)
            .await
            .unwrap(),
        vec![
            (DAY, 60),
            (DAY + 3600, 60),
            (DAY + 7200, 60),
            (DAY + 10_800, 60),
            (DAY + 14_400, 60)
        ]
    );
    app.stop().await;
}
