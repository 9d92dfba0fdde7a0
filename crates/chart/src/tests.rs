#![allow(clippy::unwrap_used)]

use super::*;

/// 2022-10-25T07:00:00Z
const T0: i64 = 1_666_681_200;
const QUARTER: i64 = 15 * MINUTE;

fn hex(c: RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

/// 24 hours at 15-minute steps from 07:00Z: a quiet day with a spike at
/// 10:00–11:30, an incident 10:00–12:00 and an open one from 04:00 (next day).
fn sample() -> ChartInput {
    let points = (0..96)
        .map(|i| {
            let t = T0 + i * QUARTER;
            let baseline = 18.0 + 8.0 * ((i as f64) / 96.0 * std::f64::consts::TAU).sin();
            let spike = if (12..18).contains(&i) {
                380.0 - 40.0 * (i - 12) as f64
            } else {
                0.0
            };
            ChartPoint {
                t,
                reports: (baseline + spike + (i % 5) as f64).round(),
                baseline,
                threshold: Some(baseline * 1.8 + 6.0),
            }
        })
        .collect();
    ChartInput {
        title: "WhatsApp: user reports".into(),
        subtitle: "Reports per 15 min, UTC, 2022-10-25 07:00 to 2022-10-26 07:00".into(),
        from: T0,
        to: T0 + DAY,
        step: QUARTER,
        points,
        incidents: vec![
            ChartIncident {
                start: T0 + 3 * HOUR,
                end: Some(T0 + 5 * HOUR),
            },
            ChartIncident {
                start: T0 + 21 * HOUR,
                end: None,
            },
        ],
    }
}

fn render(input: &ChartInput) -> String {
    render_svg(input, 600, 300).unwrap()
}

/// Parses and checks the invariants every chart must satisfy.
fn parse(svg: &str) -> roxmltree::Document<'_> {
    assert!(!svg.contains("NaN"), "NaN in output");
    assert!(!svg.to_ascii_lowercase().contains("inf"), "inf in output");
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("not XML: {e}\n{svg}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc
}

fn texts(doc: &roxmltree::Document<'_>) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or("").trim().to_string())
        .collect()
}

fn attr_f64(n: &roxmltree::Node<'_, '_>, name: &str) -> f64 {
    n.attribute(name).unwrap().parse().unwrap()
}

/// The incident rectangles in the plot (the legend swatch is drawn stronger).
fn incident_rects<'a>(doc: &'a roxmltree::Document<'a>) -> Vec<roxmltree::Node<'a, 'a>> {
    let fill = hex(INCIDENT);
    let opacity = INCIDENT_OPACITY.to_string();
    doc.descendants()
        .filter(|n| {
            n.has_tag_name("rect")
                && n.attribute("fill") == Some(fill.as_str())
                && n.attribute("opacity") == Some(opacity.as_str())
        })
        .collect()
}

fn elements_with<'a>(
    doc: &'a roxmltree::Document<'a>,
    tag: &str,
    attr: &str,
    value: &str,
) -> usize {
    doc.descendants()
        .filter(|n| n.has_tag_name(tag) && n.attribute(attr) == Some(value))
        .count()
}

/// Lines of `color` in the plot: the legend's sample strokes have two points.
fn plot_lines<'a>(
    doc: &'a roxmltree::Document<'a>,
    color: RGBColor,
) -> Vec<roxmltree::Node<'a, 'a>> {
    let stroke = hex(color);
    doc.descendants()
        .filter(|n| {
            n.has_tag_name("polyline")
                && n.attribute("stroke") == Some(stroke.as_str())
                && n.attribute("points").unwrap().split_whitespace().count() > 2
        })
        .collect()
}

#[test]
fn normal_series_is_a_complete_chart() {
    let svg = render(&sample());
    std::fs::write(std::env::temp_dir().join("downwatch-chart-test.svg"), &svg).unwrap();
    let doc = parse(&svg);
    let texts = texts(&doc);
    assert!(
        texts.contains(&"WhatsApp: user reports".to_string()),
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t.starts_with("Reports per 15 min")));
    for legend in ["reports", "normal range", "incident"] {
        assert!(
            texts.contains(&legend.to_string()),
            "legend {legend} missing: {texts:?}"
        );
    }
    // One reports line, a normal-range band, a baseline line.
    assert_eq!(plot_lines(&doc, REPORTS).len(), 1);
    assert_eq!(elements_with(&doc, "polygon", "fill", &hex(BAND)), 1);
    assert_eq!(plot_lines(&doc, BASELINE).len(), 1);
    // The y axis reaches above the spike (388) with round labels.
    assert!(texts.contains(&"400".to_string()), "{texts:?}");
    assert!(texts.contains(&"0".to_string()));
    assert!(!texts.contains(&NO_DATA_TEXT.to_string()));
    // Text is sans-serif, never a font file.
    let families: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.attribute("font-family").unwrap())
        .collect();
    assert!(
        families.iter().all(|f| f.ends_with("sans-serif")),
        "{families:?}"
    );
    let svg_el = doc.root_element();
    assert_eq!(svg_el.attribute("width"), Some("600"));
    assert_eq!(svg_el.attribute("height"), Some("300"));
}

#[test]
fn title_with_markup_is_text_not_markup() {
    let title = r#"<script>alert("x")</script> & "co""#;
    let subtitle = "a < b && c > 'd'";
    let input = ChartInput {
        title: title.into(),
        subtitle: subtitle.into(),
        ..sample()
    };
    let svg = render(&input);
    assert!(!svg.contains("<script"), "raw markup leaked");
    let doc = parse(&svg);
    assert!(doc.descendants().all(|n| !n.has_tag_name("script")));
    let texts = texts(&doc);
    assert!(
        texts.contains(&title.to_string()),
        "title not found as text: {texts:?}"
    );
    assert!(
        texts.contains(&subtitle.to_string()),
        "subtitle not found as text: {texts:?}"
    );
    // Escaped once, not twice.
    assert!(!svg.contains("&amp;lt;") && !svg.contains("&amp;amp;"));
}

#[test]
fn characters_xml_cannot_hold_are_dropped() {
    let input = ChartInput {
        title: "Bad\u{0}\u{1b}[31m name\u{FFFF}\u{202E}evil".into(),
        subtitle: "tab\there\r\nnewline".into(),
        ..sample()
    };
    let doc_svg = render(&input);
    let doc = parse(&doc_svg);
    let texts = texts(&doc);
    assert!(
        texts.contains(&"Bad [31m name evil".to_string()),
        "{texts:?}"
    );
    assert!(texts.contains(&"tab here newline".to_string()), "{texts:?}");
}

#[test]
fn long_title_is_shortened_to_fit() {
    let input = ChartInput {
        title: "A".repeat(500),
        ..sample()
    };
    let doc_svg = render(&input);
    let doc = parse(&doc_svg);
    let title = texts(&doc)
        .into_iter()
        .find(|t| t.starts_with("AAA"))
        .unwrap();
    assert!(title.ends_with('…'));
    assert!(text_width(&title, 17.0, BOLD_CHAR_WIDTH) <= 600.0 - 2.0 * 14.0);
}

#[test]
fn empty_series_still_draws_axes_and_says_so() {
    let input = ChartInput {
        points: Vec::new(),
        incidents: Vec::new(),
        ..sample()
    };
    let svg = render(&input);
    let doc = parse(&svg);
    let texts = texts(&doc);
    assert!(texts.contains(&NO_DATA_TEXT.to_string()), "{texts:?}");
    assert!(texts.contains(&"WhatsApp: user reports".to_string()));
    assert!(
        texts.contains(&"12:00".to_string()),
        "x axis labels missing: {texts:?}"
    );
    assert!(
        texts.contains(&"5".to_string()),
        "y axis has height: {texts:?}"
    );
    assert!(
        !texts.contains(&"incident".to_string()),
        "no incident legend without incidents"
    );
    assert!(incident_rects(&doc).is_empty());
}

#[test]
fn all_zero_series_has_a_nonzero_axis() {
    let mut input = sample();
    for p in &mut input.points {
        p.reports = 0.0;
        p.baseline = 0.0;
        p.threshold = Some(0.0);
    }
    let svg = render(&input);
    let doc = parse(&svg);
    let texts = texts(&doc);
    assert!(
        texts.contains(&"0".to_string()) && texts.contains(&"5".to_string()),
        "{texts:?}"
    );
    assert_eq!(plot_lines(&doc, REPORTS).len(), 1);
    assert!(!texts.contains(&NO_DATA_TEXT.to_string()));
}

#[test]
fn huge_and_non_finite_values_stay_finite() {
    let mut input = sample();
    let silly = [
        f64::MAX,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        1e300,
        -5.0,
        f64::MIN_POSITIVE,
    ];
    for (i, p) in input.points.iter_mut().enumerate() {
        p.reports = silly[i % silly.len()];
        p.baseline = silly[(i + 1) % silly.len()];
        p.threshold = Some(silly[(i + 2) % silly.len()]);
    }
    let svg = render(&input);
    let doc = parse(&svg);
    let texts = texts(&doc);
    assert!(
        texts.contains(&"1T".to_string()),
        "values clamp to 1e12: {texts:?}"
    );
    // NaN and infinities are gaps: the line breaks into several pieces.
    assert!(plot_lines(&doc, REPORTS).len() > 1);
}

#[test]
fn open_incident_is_shaded_to_the_right_edge() {
    let input = ChartInput {
        incidents: vec![ChartIncident {
            start: T0 + 18 * HOUR,
            end: None,
        }],
        ..sample()
    };
    let svg = render(&input);
    let doc = parse(&svg);
    let rects = incident_rects(&doc);
    assert_eq!(rects.len(), 1);
    let open = &rects[0];
    // Ends where the grid lines end: the right edge of the plot.
    let grid = doc
        .descendants()
        .find(|n| n.has_tag_name("line") && n.attribute("stroke") == Some(hex(GRID).as_str()))
        .unwrap();
    let right = attr_f64(&grid, "x1").max(attr_f64(&grid, "x2"));
    let left = attr_f64(&grid, "x1").min(attr_f64(&grid, "x2"));
    let end = attr_f64(open, "x") + attr_f64(open, "width");
    assert!(
        (end - right).abs() <= 2.0,
        "open incident ends at {end}, plot at {right}"
    );
    // ...and starts three quarters of the way along.
    let start = attr_f64(open, "x");
    let expected = left + (right - left) * 0.75;
    assert!(
        (start - expected).abs() <= 2.0,
        "starts at {start}, expected {expected}"
    );
}

#[test]
fn one_shaded_region_per_incident_in_range() {
    let mut input = sample();
    input.incidents = vec![
        ChartIncident {
            start: T0 + 3 * HOUR,
            end: Some(T0 + 5 * HOUR),
        },
        ChartIncident {
            start: T0 + 21 * HOUR,
            end: None,
        },
        // Before the range, after it, inverted: not drawn.
        ChartIncident {
            start: T0 - 5 * HOUR,
            end: Some(T0 - HOUR),
        },
        ChartIncident {
            start: T0 + 2 * DAY,
            end: None,
        },
        ChartIncident {
            start: T0 + 9 * HOUR,
            end: Some(T0 + 8 * HOUR),
        },
        // Straddling the left edge: clipped, drawn.
        ChartIncident {
            start: T0 - HOUR,
            end: Some(T0 + HOUR),
        },
        // One minute on a day: still visible.
        ChartIncident {
            start: T0 + 12 * HOUR,
            end: Some(T0 + 12 * HOUR + 60),
        },
    ];
    let svg = render(&input);
    let doc = parse(&svg);
    let mut rects = incident_rects(&doc);
    assert_eq!(rects.len(), 4, "{svg}");
    rects.sort_by(|a, b| attr_f64(a, "x").total_cmp(&attr_f64(b, "x")));
    let widths: Vec<f64> = rects.iter().map(|r| attr_f64(r, "width")).collect();
    // Clipped 1 h, 2 h, 1 min (widened), 3 h open: widths in proportion.
    assert!((widths[1] / widths[0] - 2.0).abs() < 0.1, "{widths:?}");
    assert!((widths[3] / widths[1] - 1.5).abs() < 0.1, "{widths:?}");
    assert!(
        widths[2] >= 2.0 && widths[2] < widths[0] / 4.0,
        "{widths:?}"
    );
    // All behind the data: drawn before the reports line.
    let order: Vec<_> = doc.descendants().filter(|n| n.is_element()).collect();
    let last_rect = order
        .iter()
        .rposition(|n| incident_rects(&doc).contains(n))
        .unwrap();
    let line = order
        .iter()
        .position(|n| plot_lines(&doc, REPORTS).contains(n))
        .unwrap();
    assert!(last_rect < line);
}

#[test]
fn x_axis_labels_are_utc_hours() {
    let svg = render(&sample());
    let doc = parse(&svg);
    let clock: Vec<String> = texts(&doc)
        .into_iter()
        .filter(|t| t.len() == 5 && t.as_bytes()[2] == b':')
        .collect();
    // 07:00Z to 07:00Z next day, every 3 hours on UTC multiples of 3.
    assert_eq!(
        clock,
        [
            "09:00", "12:00", "15:00", "18:00", "21:00", "00:00", "03:00", "06:00"
        ],
        "{clock:?}"
    );
}

#[test]
fn x_axis_labels_for_long_ranges_are_dates() {
    // 30 days from 2022-10-25T07:00Z, daily points.
    let input = ChartInput {
        from: T0,
        to: T0 + 30 * DAY,
        step: DAY,
        points: (0..30)
            .map(|i| ChartPoint {
                t: T0 + i * DAY,
                reports: 100.0 + i as f64,
                baseline: 90.0,
                threshold: None,
            })
            .collect(),
        incidents: Vec::new(),
        ..sample()
    };
    let doc_svg = render(&input);
    let doc = parse(&doc_svg);
    let texts = texts(&doc);
    // Weekly ticks on Mondays: 2022-10-31 and 2022-11-07 were Mondays.
    assert!(texts.contains(&"Oct 31".to_string()), "{texts:?}");
    assert!(texts.contains(&"Nov 7".to_string()), "{texts:?}");
    assert!(
        !texts
            .iter()
            .any(|t| t.len() == 5 && t.as_bytes()[2] == b':'),
        "{texts:?}"
    );
    // No thresholds: no band, but the baseline is drawn.
    assert_eq!(elements_with(&doc, "polygon", "fill", &hex(BAND)), 0);
    assert_eq!(plot_lines(&doc, BASELINE).len(), 1);
}

#[test]
fn sizes_are_clamped_and_scale() {
    let input = sample();
    for (w, h, ew, eh) in [
        (1, 1, 200, 200),
        (100_000, 100_000, 4000, 4000),
        (1200, 600, 1200, 600),
        (320, 240, 320, 240),
    ] {
        let svg = render_svg(&input, w, h).unwrap();
        let doc = parse(&svg);
        let root = doc.root_element();
        assert_eq!(root.attribute("width"), Some(ew.to_string().as_str()));
        assert_eq!(root.attribute("height"), Some(eh.to_string().as_str()));
        assert!(texts(&doc).iter().any(|t| t.starts_with("WhatsApp")));
    }
    // Twice the size: twice the type.
    let small = render_svg(&input, 600, 300).unwrap();
    let big = render_svg(&input, 1200, 600).unwrap();
    let title_size = |svg: &str| -> f64 {
        let doc = roxmltree::Document::parse(svg).unwrap();
        let title = doc
            .descendants()
            .find(|n| n.has_tag_name("text") && n.attribute("font-weight") == Some("bold"))
            .unwrap();
        attr_f64(&title, "font-size")
    };
    assert!((title_size(&big) / title_size(&small) - 2.0).abs() < 0.01);
}

#[test]
fn all_text_stays_inside_small_charts() {
    for (w, h) in [(200, 200), (320, 240), (600, 300), (4000, 200)] {
        let svg = render_svg(&sample(), w, h).unwrap();
        let doc = parse(&svg);
        for t in doc.descendants().filter(|n| n.has_tag_name("text")) {
            let text = t.text().unwrap().trim();
            let size = attr_f64(&t, "font-size");
            let cw = if t.attribute("font-weight") == Some("bold") {
                BOLD_CHAR_WIDTH
            } else {
                CHAR_WIDTH
            };
            let tw = text_width(text, size, cw);
            let x = attr_f64(&t, "x");
            let (left, right) = match t.attribute("text-anchor").unwrap() {
                "start" => (x, x + tw),
                "middle" => (x - tw / 2.0, x + tw / 2.0),
                _ => (x - tw, x),
            };
            assert!(
                left >= 0.0 && right <= f64::from(w),
                "{text:?} spans {left}..{right} in {w}x{h}"
            );
            let y = attr_f64(&t, "y");
            assert!(
                y >= 0.0 && y + size <= f64::from(h),
                "{text:?} at y {y} in {w}x{h}"
            );
            assert!(size >= 10.0, "{text:?} in {size}px type at {w}x{h}");
        }
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let base = sample();
    let err = |input: ChartInput| render_svg(&input, 600, 300).unwrap_err();
    assert!(matches!(
        err(ChartInput {
            to: T0,
            ..base.clone()
        }),
        ChartError::InvalidRange { .. }
    ));
    assert!(matches!(
        err(ChartInput {
            to: T0 - 1,
            ..base.clone()
        }),
        ChartError::InvalidRange { .. }
    ));
    assert!(matches!(
        err(ChartInput {
            from: -1,
            ..base.clone()
        }),
        ChartError::InvalidRange { .. }
    ));
    assert!(matches!(
        err(ChartInput {
            to: i64::MAX,
            ..base.clone()
        }),
        ChartError::InvalidRange { .. }
    ));
    assert!(matches!(
        err(ChartInput {
            step: 0,
            ..base.clone()
        }),
        ChartError::InvalidStep(0)
    ));
    assert!(matches!(
        err(ChartInput {
            step: i64::MIN,
            ..base.clone()
        }),
        ChartError::InvalidStep(_)
    ));
    let many = ChartInput {
        points: vec![base.points[0]; MAX_POINTS + 1],
        ..base.clone()
    };
    assert!(matches!(
        err(many),
        ChartError::TooMany { what: "points", .. }
    ));
}

#[test]
fn odd_but_valid_input_renders() {
    let base = sample();
    let cases = [
        // Points out of order, duplicated, outside the range, at i64 extremes.
        ChartInput {
            points: {
                let mut p = base.points.clone();
                p.reverse();
                p.push(ChartPoint {
                    t: i64::MIN,
                    reports: 1.0,
                    baseline: 1.0,
                    threshold: None,
                });
                p.push(ChartPoint {
                    t: i64::MAX,
                    reports: 1.0,
                    baseline: 1.0,
                    threshold: None,
                });
                p.push(base.points[3]);
                p
            },
            incidents: vec![ChartIncident {
                start: i64::MIN,
                end: Some(i64::MAX),
            }],
            ..base.clone()
        },
        // A single point, a step longer than the range, the widest range.
        ChartInput {
            points: vec![base.points[0]],
            step: i64::MAX,
            ..base.clone()
        },
        ChartInput {
            from: 0,
            to: MAX_TIMESTAMP,
            step: DAY,
            ..base.clone()
        },
        // A range shorter than a minute.
        ChartInput {
            from: T0,
            to: T0 + 30,
            step: 60,
            ..base.clone()
        },
        ChartInput {
            title: String::new(),
            subtitle: String::new(),
            ..base.clone()
        },
    ];
    for input in cases {
        let svg = render(&input);
        parse(&svg);
    }
}

#[test]
fn y_scale_is_round_and_never_flat() {
    assert_eq!(y_scale(0.0, 5), (5.0, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
    assert_eq!(y_scale(388.0, 5).0, 400.0);
    assert_eq!(
        y_scale(100.0, 5),
        (100.0, vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0])
    );
    assert_eq!(y_scale(110.0, 5).0, 125.0);
    assert_eq!(y_scale(101.0, 4).0, 150.0);
    assert_eq!(y_scale(7.0, 5).1.last(), Some(&8.0));
    for max in [
        0.0, 0.3, 1.0, 4.9, 17.0, 999.0, 1001.0, 123_456.0, MAX_VALUE,
    ] {
        for target in [2, 3, 5, 8] {
            let (top, ticks) = y_scale(max, target);
            assert!(top >= max && top > 0.0);
            assert!(
                ticks.len() >= 2 && ticks.len() <= target + 2,
                "{max} {target} {ticks:?}"
            );
            assert_eq!(ticks.first(), Some(&0.0));
            assert_eq!(ticks.last(), Some(&top));
        }
    }
}

#[test]
fn counts_are_formatted_for_people() {
    assert_eq!(format_count(0.0), "0");
    assert_eq!(format_count(950.0), "950");
    assert_eq!(format_count(12_500.0), "12,500");
    assert_eq!(format_count(999_999.0), "999,999");
    assert_eq!(format_count(1_250_000.0), "1.25M");
    assert_eq!(format_count(2_500_000_000.0), "2.5B");
    assert_eq!(format_count(1e12), "1T");
    assert_eq!(format_count(f64::NAN), "0");
}

#[test]
fn time_ticks_follow_the_range() {
    assert_eq!(format_time(T0, TimeFormat::Clock), "07:00");
    assert_eq!(format_time(T0, TimeFormat::Day), "Oct 25");
    assert_eq!(format_time(T0, TimeFormat::MonthYear), "Oct 2022");
    // Two hours at 600 px: every 15 minutes.
    let (ticks, fmt) = time_ticks(T0, T0 + 2 * HOUR, 11.5, 700.0);
    assert_eq!(fmt, TimeFormat::Clock);
    assert_eq!(ticks.len(), 9);
    assert!(ticks.iter().all(|t| t % (15 * MINUTE) == 0));
    // A year: months.
    let (ticks, fmt) = time_ticks(T0, T0 + 365 * DAY, 11.5, 500.0);
    assert_eq!(fmt, TimeFormat::MonthYear);
    assert!(
        ticks
            .iter()
            .all(|&t| format_time(t, TimeFormat::Day).ends_with(" 1"))
    );
    assert!(ticks.len() >= 3 && ticks.len() <= 8, "{}", ticks.len());
    // Centuries: years.
    let (ticks, fmt) = time_ticks(0, MAX_TIMESTAMP, 11.5, 500.0);
    assert_eq!(fmt, TimeFormat::Year);
    assert!(!ticks.is_empty());
}

#[test]
fn clean_text_keeps_ordinary_text() {
    assert_eq!(
        clean_text("  Café  Zürich — “down” <b> "),
        "Café Zürich — “down” <b>"
    );
    assert_eq!(fit_text("short".into(), 100.0, 10.0, 0.6), "short");
    let fitted = fit_text("x".repeat(100), 60.0, 10.0, 0.6);
    assert_eq!(fitted, format!("{}…", "x".repeat(9)));
}
