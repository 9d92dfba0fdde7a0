//! Downwatch embeddable charts: one service's user reports per time bucket
//! against its normal range, incident periods shaded, as a standalone SVG a
//! journalist can paste into an article.
//!
//! Drawn with [`plotters`]' SVG backend. Text is emitted as SVG `<text>` in a
//! sans-serif font stack and laid out with plotters' built-in width estimate,
//! so no system fonts (fontconfig/freetype) are needed. The SVG backend
//! XML-escapes every text and attribute value itself; this crate only strips
//! characters XML cannot carry at all (control characters) and must never
//! escape a second time.
//!
//! ```
//! use downwatch_chart::{ChartInput, ChartPoint, render_svg};
//!
//! let input = ChartInput {
//!     title: "Example: user reports".into(),
//!     subtitle: "Reports per hour, UTC".into(),
//!     from: 1_700_000_000 - 1_700_000_000 % 3600,
//!     to: 1_700_000_000 - 1_700_000_000 % 3600 + 24 * 3600,
//!     step: 3600,
//!     points: Vec::new(),
//!     incidents: Vec::new(),
//! };
//! let svg = render_svg(&input, 600, 300)?;
//! assert!(svg.starts_with("<svg"));
//! # Ok::<(), downwatch_chart::ChartError>(())
//! ```

use std::ops::Range;

use chrono::{DateTime, Datelike, NaiveDate};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Smallest width or height (pixels) [`render_svg`] draws; smaller requests are raised to it.
pub const MIN_SIZE: u32 = 200;
/// Largest width or height (pixels) [`render_svg`] draws; larger requests are lowered to it.
pub const MAX_SIZE: u32 = 4000;
/// Most points one chart accepts.
pub const MAX_POINTS: usize = 50_000;
/// Most incidents one chart accepts.
pub const MAX_INCIDENTS: usize = 10_000;
/// Latest instant a chart may show: 9999-12-31T23:59:59Z.
pub const MAX_TIMESTAMP: i64 = 253_402_300_799;
/// Values are clamped to `0..=MAX_VALUE` so axis labels stay finite and readable.
const MAX_VALUE: f64 = 1e12;

/// One bucket of the series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChartPoint {
    /// Bucket start, unix seconds UTC.
    pub t: i64,
    /// Reports in the bucket.
    pub reports: f64,
    /// The service's expected reports for the bucket.
    pub baseline: f64,
    /// Upper edge of the normal range, where the detector has one.
    pub threshold: Option<f64>,
}

/// An incident period to shade; `end` None = still open (shade to the right edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChartIncident {
    /// Start, unix seconds UTC.
    pub start: i64,
    /// End, unix seconds UTC; `None` while the incident is open.
    pub end: Option<i64>,
}

/// Everything one chart shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChartInput {
    /// Headline, e.g. "WhatsApp: user reports". Contains a user-supplied
    /// service name: any characters are allowed and end up escaped.
    pub title: String,
    /// Second line, e.g. "Reports per 15 min, UTC, 2026-11-30 07:00 to 2026-12-01 07:00".
    pub subtitle: String,
    /// Left edge of the x axis, unix seconds UTC.
    pub from: i64,
    /// Right edge of the x axis, unix seconds UTC.
    pub to: i64,
    /// Bucket length in seconds (60, 300, 900, 3600 or 86400).
    pub step: i64,
    /// The buckets, in any order; those outside `from..to` are left out.
    pub points: Vec<ChartPoint>,
    /// Incident periods; those outside `from..to` are left out.
    pub incidents: Vec<ChartIncident>,
}

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// `from` is not before `to`, or either lies outside 1970..=9999.
    #[error(
        "invalid time range {from}..{to}: from must be before to, both within 1970-01-01..=9999-12-31"
    )]
    InvalidRange {
        /// The requested left edge.
        from: i64,
        /// The requested right edge.
        to: i64,
    },
    /// The bucket length is not positive.
    #[error("invalid step {0}: the bucket length must be a positive number of seconds")]
    InvalidStep(i64),
    /// More points or incidents than one chart can show.
    #[error("too many {what}: {count}, at most {max}")]
    TooMany {
        /// "points" or "incidents".
        what: &'static str,
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The drawing backend failed.
    #[error("drawing the chart failed: {0}")]
    Draw(String),
}

/// Draws `input` as a standalone SVG document `width` × `height` pixels
/// (each clamped to [`MIN_SIZE`]`..=`[`MAX_SIZE`]).
///
/// Non-finite or negative values are treated as missing (a gap in the line)
/// or zero respectively; empty series still give a complete chart.
pub fn render_svg(input: &ChartInput, width: u32, height: u32) -> Result<String, ChartError> {
    validate(input)?;
    let width = width.clamp(MIN_SIZE, MAX_SIZE);
    let height = height.clamp(MIN_SIZE, MAX_SIZE);
    let data = Prepared::new(input);
    let layout = Layout::new(input, &data, width, height);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        draw(&root, input, &data, &layout)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

fn validate(input: &ChartInput) -> Result<(), ChartError> {
    let ChartInput { from, to, step, .. } = *input;
    if !(0..=MAX_TIMESTAMP).contains(&from) || !(0..=MAX_TIMESTAMP).contains(&to) || from >= to {
        return Err(ChartError::InvalidRange { from, to });
    }
    if step <= 0 {
        return Err(ChartError::InvalidStep(step));
    }
    if input.points.len() > MAX_POINTS {
        return Err(ChartError::TooMany {
            what: "points",
            count: input.points.len(),
            max: MAX_POINTS,
        });
    }
    if input.incidents.len() > MAX_INCIDENTS {
        return Err(ChartError::TooMany {
            what: "incidents",
            count: input.incidents.len(),
            max: MAX_INCIDENTS,
        });
    }
    Ok(())
}

fn draw_err<E: std::fmt::Display>(e: E) -> ChartError {
    ChartError::Draw(e.to_string())
}

// ---------------------------------------------------------------------------
// Look

/// Font stack for every text element. No font file is read: the SVG viewer
/// picks the first family it has.
const FONT: &str = "Helvetica, Arial, sans-serif";
/// plotters writes `font-size = size / 1.24`; multiply by this to get pixels.
const PLOTTERS_FONT_FACTOR: f64 = 1.24;

const BACKGROUND: RGBColor = RGBColor(0xFF, 0xFF, 0xFF);
const INK: RGBColor = RGBColor(0x1A, 0x1A, 0x1A);
const MUTED_INK: RGBColor = RGBColor(0x5C, 0x5C, 0x5C);
const AXIS_INK: RGBColor = RGBColor(0x6E, 0x6E, 0x6E);
const GRID: RGBColor = RGBColor(0xE4, 0xE4, 0xE4);
const ZERO_LINE: RGBColor = RGBColor(0x9A, 0x9A, 0x9A);
const REPORTS: RGBColor = RGBColor(0x15, 0x5E, 0xB8);
const BAND: RGBColor = RGBColor(0xA7, 0xB4, 0xC2);
const BAND_OPACITY: f64 = 0.5;
const BASELINE: RGBColor = RGBColor(0x80, 0x8F, 0x9E);
const INCIDENT: RGBColor = RGBColor(0xE0, 0x3A, 0x3E);
const INCIDENT_OPACITY: f64 = 0.14;
/// The legend swatch is small: a little stronger so it reads as the same colour.
const INCIDENT_SWATCH_OPACITY: f64 = 0.22;

const NO_DATA_TEXT: &str = "No reports in this period";

/// Average advance of one character as a fraction of the font size, for a
/// Helvetica-like face (a little generous so labels never collide).
const CHAR_WIDTH: f64 = 0.58;
const BOLD_CHAR_WIDTH: f64 = 0.62;

fn text_width(text: &str, px: f64, char_width: f64) -> f64 {
    text.chars().count() as f64 * px * char_width
}

fn font(px: f64, style: FontStyle) -> FontDesc<'static> {
    FontDesc::new(FontFamily::Name(FONT), px * PLOTTERS_FONT_FACTOR, style)
}

fn text_style(px: f64, style: FontStyle, color: &RGBColor, pos: Pos) -> TextStyle<'static> {
    font(px, style).color(color).pos(pos)
}

fn px(v: f64) -> i32 {
    v.round() as i32
}

fn stroke(v: f64) -> u32 {
    v.round().max(1.0) as u32
}

/// Makes a user string safe to hand to the SVG backend, which escapes
/// markup itself: characters XML 1.0 cannot represent (control characters,
/// U+FFFE, U+FFFF) and bidi/format controls that could reorder the visible
/// text become spaces, and whitespace runs collapse, as SVG would render them.
fn clean_text(s: &str) -> String {
    let replaced: String = s
        .chars()
        .map(|c| if is_unsafe_char(c) { ' ' } else { c })
        .collect();
    replaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_unsafe_char(c: char) -> bool {
    const NOT_XML: [char; 2] = ['\u{FFFE}', '\u{FFFF}'];
    // Zero-width and directional marks, embeddings, overrides and isolates.
    const BIDI: [(char, char); 3] = [
        ('\u{200B}', '\u{200F}'),
        ('\u{202A}', '\u{202E}'),
        ('\u{2066}', '\u{2069}'),
    ];
    c.is_control() || NOT_XML.contains(&c) || BIDI.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// Shortens `text` with an ellipsis so it fits `max_width` pixels.
fn fit_text(text: String, max_width: f64, px: f64, char_width: f64) -> String {
    if text_width(&text, px, char_width) <= max_width {
        return text;
    }
    let keep = ((max_width / (px * char_width)).floor() as usize).saturating_sub(1);
    let mut out: String = text.chars().take(keep).collect();
    out.truncate(out.trim_end().len());
    out.push('…');
    out
}

// ---------------------------------------------------------------------------
// Data

/// A run of drawable points, in x order.
type Segment = Vec<(f64, f64)>;

/// The input reduced to what is drawn: finite values, clamped, inside the range.
struct Prepared {
    reports: Vec<Segment>,
    baseline: Vec<Segment>,
    /// Polygons of the normal range: upper edge left to right, then baseline right to left.
    band: Vec<Vec<(f64, f64)>>,
    /// Incident spans in seconds, clipped to the range.
    incidents: Vec<(f64, f64)>,
    max_value: f64,
    has_reports: bool,
}

fn clean_value(v: f64) -> Option<f64> {
    v.is_finite().then(|| v.clamp(0.0, MAX_VALUE))
}

impl Prepared {
    fn new(input: &ChartInput) -> Self {
        let (from, to, step) = (input.from, input.to, input.step);
        let (lo, hi) = (from as f64, to as f64);
        let half = step as f64 / 2.0;

        let mut points: Vec<&ChartPoint> = input
            .points
            .iter()
            .filter(|p| p.t < to && p.t.saturating_add(step) > from)
            .collect();
        points.sort_by_key(|p| p.t);
        // Bucket centre, kept on the axis for buckets straddling an edge.
        let x_of = |p: &ChartPoint| (p.t as f64 + half).clamp(lo, hi);

        let reports = segments(
            points
                .iter()
                .map(|p| clean_value(p.reports).map(|v| (x_of(p), v))),
            half,
            (lo, hi),
        );
        let baseline = segments(
            points
                .iter()
                .map(|p| clean_value(p.baseline).map(|v| (x_of(p), v))),
            half,
            (lo, hi),
        );
        // The band runs from the baseline up to the threshold; encode both
        // edges in one value pair per x so segmenting keeps them together.
        let band_runs = segments_pairs(
            points.iter().map(|p| {
                let base = clean_value(p.baseline)?;
                let upper = clean_value(p.threshold?)?.max(base);
                Some((x_of(p), base, upper))
            }),
            half,
            (lo, hi),
        );
        let band = band_runs
            .into_iter()
            .map(|run| {
                let mut poly: Vec<(f64, f64)> = run.iter().map(|&(x, _, up)| (x, up)).collect();
                poly.extend(run.iter().rev().map(|&(x, base, _)| (x, base)));
                poly
            })
            .collect();

        let mut max_value: f64 = 0.0;
        for p in &points {
            for v in [Some(p.reports), Some(p.baseline), p.threshold]
                .into_iter()
                .flatten()
                .filter_map(clean_value)
            {
                max_value = max_value.max(v);
            }
        }

        let incidents = input
            .incidents
            .iter()
            .filter_map(|i| {
                let end = i.end.unwrap_or(to).min(to);
                let start = i.start.max(from);
                (end > start).then_some((start as f64, end as f64))
            })
            .collect();

        let has_reports = reports.iter().any(|s| !s.is_empty());
        Prepared {
            reports,
            baseline,
            band,
            incidents,
            max_value,
            has_reports,
        }
    }
}

/// Splits `(x, y)` items into runs at the missing ones. A lone point would
/// draw nothing, so it becomes a flat stroke across its bucket.
fn segments(
    items: impl Iterator<Item = Option<(f64, f64)>>,
    half: f64,
    (lo, hi): (f64, f64),
) -> Vec<Segment> {
    segments_pairs(items.map(|o| o.map(|(x, y)| (x, y, y))), half, (lo, hi))
        .into_iter()
        .map(|run| run.into_iter().map(|(x, y, _)| (x, y)).collect())
        .collect()
}

fn segments_pairs(
    items: impl Iterator<Item = Option<(f64, f64, f64)>>,
    half: f64,
    (lo, hi): (f64, f64),
) -> Vec<Vec<(f64, f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64, f64)>> = Vec::new();
    let mut current = Vec::new();
    for item in items {
        match item {
            Some(v) => current.push(v),
            None if !current.is_empty() => out.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    for run in &mut out {
        if let [(x, a, b)] = run[..] {
            *run = vec![((x - half).max(lo), a, b), ((x + half).min(hi), a, b)];
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Axes

/// A linear axis whose grid lines and labels sit exactly at `ticks`.
struct FixedAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ranged for FixedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = self.hi - self.lo;
        let frac = (value - self.lo) / span;
        // Everything drawn lies in the range; clamping keeps stray values on the plot.
        let frac = if frac.is_finite() {
            frac.clamp(0.0, 1.0)
        } else {
            0.0
        };
        px(f64::from(limit.0) + frac * f64::from(limit.1 - limit.0))
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Only major grid lines: plotters asks for light ones with `Any`.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

/// A y axis from 0 to a round maximum at least `max_value` with about
/// `target` intervals of 1, 2, 2.5 or 5 × 10^k (never below 1: reports are counts).
fn y_scale(max_value: f64, target: usize) -> (f64, Vec<f64>) {
    let target = target.max(1);
    let m = max_value.max(5.0);
    let raw = m / target as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let factor = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .filter(|&f| f != 2.5 || mag >= 10.0)
        .find(|&f| f >= norm - 1e-9)
        .unwrap_or(10.0);
    let step = (factor * mag).max(1.0);
    let mut n = (m / step - 1e-9).ceil().max(1.0);
    if n * step < m {
        n += 1.0;
    }
    let ticks = (0..=n as usize).map(|i| i as f64 * step).collect();
    (n * step, ticks)
}

/// "1,250" below a million, then "2.5M", "1B", "1T".
fn format_count(v: f64) -> String {
    let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
    for (unit, suffix) in [(1e12, "T"), (1e9, "B"), (1e6, "M")] {
        if v >= unit {
            let s = format!("{:.2}", v / unit);
            let s = s.trim_end_matches('0').trim_end_matches('.');
            return format!("{s}{suffix}");
        }
    }
    let digits = format!("{}", v.round() as u64);
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeFormat {
    /// "14:00"
    Clock,
    /// "Dec 1"
    Day,
    /// "Dec 2026"
    MonthYear,
    /// "2026"
    Year,
}

const MINUTE: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
/// 1970-01-05, the first Monday after the epoch: weekly ticks fall on Mondays.
const MONDAY_OFFSET: i64 = 4 * DAY;

fn format_time(t: i64, format: TimeFormat) -> String {
    let Some(dt) = DateTime::from_timestamp(t, 0) else {
        return String::new();
    };
    let pattern = match format {
        TimeFormat::Clock => "%H:%M",
        TimeFormat::Day => "%b %-d",
        TimeFormat::MonthYear => "%b %Y",
        TimeFormat::Year => "%Y",
    };
    dt.format(pattern).to_string()
}

/// Longest label a format produces, for spacing.
fn time_label_chars(format: TimeFormat) -> usize {
    match format {
        TimeFormat::Clock => 5,
        TimeFormat::Day => 6,
        TimeFormat::MonthYear => 8,
        TimeFormat::Year => 4,
    }
}

/// UTC-aligned tick instants for `from..=to`: the finest round interval
/// giving at most `max_ticks` of them, and how to label them.
fn time_ticks(from: i64, to: i64, label_px: f64, plot_width: f64) -> (Vec<i64>, TimeFormat) {
    let span = to - from;
    let max_for = |format: TimeFormat| -> usize {
        let label = time_label_chars(format) as f64 * label_px * CHAR_WIDTH;
        ((plot_width / (label * 1.9)).floor() as usize).max(2)
    };

    if span <= 2 * DAY {
        let max = max_for(TimeFormat::Clock);
        for iv in [
            MINUTE,
            2 * MINUTE,
            5 * MINUTE,
            10 * MINUTE,
            15 * MINUTE,
            30 * MINUTE,
            HOUR,
            2 * HOUR,
            3 * HOUR,
            6 * HOUR,
            12 * HOUR,
        ] {
            if let Some(ticks) = fixed_ticks(from, to, iv, 0, max) {
                return (ticks, TimeFormat::Clock);
            }
        }
        return (
            fixed_ticks(from, to, DAY, 0, usize::MAX).unwrap_or_default(),
            TimeFormat::Clock,
        );
    }

    let max = max_for(TimeFormat::Day);
    for (iv, offset) in [
        (DAY, 0),
        (2 * DAY, 0),
        (7 * DAY, MONDAY_OFFSET),
        (14 * DAY, MONDAY_OFFSET),
    ] {
        if let Some(ticks) = fixed_ticks(from, to, iv, offset, max) {
            return (ticks, TimeFormat::Day);
        }
    }
    let month_format = if span <= 183 * DAY {
        TimeFormat::Day
    } else {
        TimeFormat::MonthYear
    };
    let max = max_for(month_format);
    for months in [1, 2, 3, 6] {
        if let Some(ticks) = month_ticks(from, to, months, max) {
            return (ticks, month_format);
        }
    }
    let max = max_for(TimeFormat::Year);
    for years in [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000] {
        if let Some(ticks) = month_ticks(from, to, years * 12, max) {
            return (ticks, TimeFormat::Year);
        }
    }
    (Vec::new(), TimeFormat::Year)
}

/// Instants `t` in `from..=to` with `t ≡ offset (mod interval)`, or None if more than `max`.
fn fixed_ticks(from: i64, to: i64, interval: i64, offset: i64, max: usize) -> Option<Vec<i64>> {
    let first = from + (offset - from).rem_euclid(interval);
    if first > to {
        return Some(Vec::new());
    }
    let count = usize::try_from((to - first) / interval + 1).ok()?;
    if count > max {
        return None;
    }
    Some((0..count as i64).map(|i| first + i * interval).collect())
}

/// Midnights of the first day of every `months`-th month (counted from year 0)
/// in `from..=to`, or None if more than `max`.
fn month_ticks(from: i64, to: i64, months: i64, max: usize) -> Option<Vec<i64>> {
    let start = DateTime::from_timestamp(from, 0)?;
    let month_start = |index: i64| -> Option<i64> {
        let year = i32::try_from(index.div_euclid(12)).ok()?;
        let month = u32::try_from(index.rem_euclid(12) + 1).ok()?;
        Some(
            NaiveDate::from_ymd_opt(year, month, 1)?
                .and_hms_opt(0, 0, 0)?
                .and_utc()
                .timestamp(),
        )
    };
    let mut index = i64::from(start.year()) * 12 + i64::from(start.month0());
    if month_start(index)? < from {
        index += 1;
    }
    index = (index + months - 1).div_euclid(months) * months;
    let mut ticks = Vec::new();
    while let Some(t) = month_start(index) {
        if t > to {
            break;
        }
        if ticks.len() == max {
            return None;
        }
        ticks.push(t);
        index += months;
    }
    Some(ticks)
}

// ---------------------------------------------------------------------------
// Layout

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegendItem {
    Reports,
    NormalRange,
    Incident,
}

impl LegendItem {
    fn label(self) -> &'static str {
        match self {
            LegendItem::Reports => "reports",
            LegendItem::NormalRange => "normal range",
            LegendItem::Incident => "incident",
        }
    }
}

/// Legend geometry at scale 1, in pixels.
const LEGEND_SWATCH_W: f64 = 16.0;
const LEGEND_SWATCH_H: f64 = 9.0;
const LEGEND_LABEL_GAP: f64 = 5.0;
const LEGEND_GAP: f64 = 12.0;

fn legend_item_width(item: LegendItem, label_px: f64, s: f64) -> f64 {
    (LEGEND_SWATCH_W + LEGEND_LABEL_GAP) * s + text_width(item.label(), label_px, CHAR_WIDTH)
}

/// Pixel geometry and text for one chart size; everything scales with `s`.
struct Layout {
    s: f64,
    pad: f64,
    title: Option<(String, f64)>,
    subtitle: Option<(String, f64)>,
    title_px: f64,
    subtitle_px: f64,
    /// Legend items with the left edge of the swatch and the row's centre line.
    legend: Vec<(LegendItem, f64, f64)>,
    legend_px: f64,
    header_h: f64,
    tick_px: f64,
    tick_mark: f64,
    y_label_w: f64,
    x_label_h: f64,
    margin_right: f64,
    margin_top: f64,
    margin_bottom: f64,
    plot_w: f64,
    y_max: f64,
    y_ticks: Vec<f64>,
    x_ticks: Vec<i64>,
    x_format: TimeFormat,
}

impl Layout {
    fn new(input: &ChartInput, data: &Prepared, width: u32, height: u32) -> Self {
        let (w, h) = (f64::from(width), f64::from(height));
        // Type never below 10 px, even on the smallest charts.
        let s = (w / 600.0).min(h / 300.0).clamp(0.87, 3.0);
        let pad = 14.0 * s;
        let title_px = 17.0 * s;
        let subtitle_px = 12.5 * s;
        let legend_px = 11.5 * s;
        let tick_px = 11.5 * s;
        let text_room = w - 2.0 * pad;

        let mut y = pad;
        let title = Some(clean_text(&input.title))
            .filter(|t| !t.is_empty())
            .map(|t| {
                let at = y;
                y += title_px * 1.35;
                (fit_text(t, text_room, title_px, BOLD_CHAR_WIDTH), at)
            });
        let subtitle = Some(clean_text(&input.subtitle))
            .filter(|t| !t.is_empty())
            .map(|t| {
                let at = y;
                y += subtitle_px * 1.4;
                (fit_text(t, text_room, subtitle_px, CHAR_WIDTH), at)
            });
        // Legend: one row under the subtitle, wrapping on narrow charts.
        let mut items = vec![LegendItem::Reports, LegendItem::NormalRange];
        if !data.incidents.is_empty() {
            items.push(LegendItem::Incident);
        }
        let row_h = legend_px * 1.5;
        let mut mid = y + 4.0 * s + legend_px * 0.6;
        let mut x = pad;
        let mut legend = Vec::with_capacity(items.len());
        for item in items {
            let item_w = legend_item_width(item, legend_px, s);
            if x > pad && x + item_w > w - pad {
                x = pad;
                mid += row_h;
            }
            legend.push((item, x, mid));
            x += item_w + LEGEND_GAP * s;
        }
        let header_h = mid + legend_px * 0.6 + 4.0 * s;

        let tick_mark = 4.0 * s;
        // plotters keeps labels 2 × tick mark away from the plot.
        let x_label_h = 2.0 * tick_mark + tick_px * 1.25;
        let margin_top = 8.0 * s;
        let margin_bottom = 6.0 * s;
        let plot_h = (h - header_h - margin_top - margin_bottom - x_label_h).max(20.0);

        let target = ((plot_h / (tick_px * 3.2)).floor() as usize).clamp(2, 8);
        let (y_max, y_ticks) = y_scale(data.max_value, target);
        let widest_y = y_ticks
            .iter()
            .map(|&v| text_width(&format_count(v), tick_px, CHAR_WIDTH))
            .fold(0.0, f64::max);
        let y_label_w = widest_y + 2.0 * tick_mark + 4.0 * s;

        // Room for half of a label centred on the right edge.
        let margin_right = pad.max(text_width("00:00", tick_px, CHAR_WIDTH) / 2.0 + 4.0 * s);
        let plot_w = (w - pad - y_label_w - margin_right).max(20.0);
        let (x_ticks, x_format) = time_ticks(input.from, input.to, tick_px, plot_w);

        Layout {
            s,
            pad,
            title,
            subtitle,
            title_px,
            subtitle_px,
            legend,
            legend_px,
            header_h,
            tick_px,
            tick_mark,
            y_label_w,
            x_label_h,
            margin_right,
            margin_top,
            margin_bottom,
            plot_w,
            y_max,
            y_ticks,
            x_ticks,
            x_format,
        }
    }
}

// ---------------------------------------------------------------------------
// Drawing

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    input: &ChartInput,
    data: &Prepared,
    l: &Layout,
) -> Result<(), ChartError> {
    root.fill(&BACKGROUND).map_err(draw_err)?;
    draw_header(root, l)?;

    let (_, body) = root.split_vertically(px(l.header_h));
    let x_axis = FixedAxis {
        lo: input.from as f64,
        hi: input.to as f64,
        ticks: l.x_ticks.iter().map(|&t| t as f64).collect(),
    };
    let y_axis = FixedAxis {
        lo: 0.0,
        hi: l.y_max,
        ticks: l.y_ticks.clone(),
    };
    let mut chart = ChartBuilder::on(&body)
        .margin_left(px(l.pad))
        .margin_right(px(l.margin_right))
        .margin_top(px(l.margin_top))
        .margin_bottom(px(l.margin_bottom))
        .x_label_area_size(px(l.x_label_h))
        .y_label_area_size(px(l.y_label_w))
        .build_cartesian_2d(x_axis, y_axis)
        .map_err(draw_err)?;

    // Incidents first, so everything else sits on top of the shading. At
    // least 2 px wide, so a short incident on a long range stays visible.
    let min_width = (input.to - input.from) as f64 * (2.0 * l.s / l.plot_w);
    let incident_style = INCIDENT.mix(INCIDENT_OPACITY).filled();
    chart
        .draw_series(data.incidents.iter().map(|&(start, end)| {
            let end = if end - start < min_width {
                (start + min_width).min(input.to as f64)
            } else {
                end
            };
            let start = start.min(end - min_width).max(input.from as f64);
            Rectangle::new([(start, l.y_max), (end, 0.0)], incident_style)
        }))
        .map_err(draw_err)?;

    let x_format = l.x_format;
    let x_labels = |v: &f64| format_time(v.round() as i64, x_format);
    let y_labels = |v: &f64| format_count(*v);
    let tick_font = text_style(
        l.tick_px,
        FontStyle::Normal,
        &AXIS_INK,
        Pos::new(HPos::Center, VPos::Top),
    );
    chart
        .configure_mesh()
        .disable_x_mesh()
        .bold_line_style(GRID.stroke_width(1))
        .light_line_style(TRANSPARENT)
        .axis_style(TRANSPARENT)
        .x_labels(l.x_ticks.len())
        .y_labels(l.y_ticks.len())
        .x_label_formatter(&x_labels)
        .y_label_formatter(&y_labels)
        .label_style(tick_font)
        .set_all_tick_mark_size(px(l.tick_mark))
        .draw()
        .map_err(draw_err)?;

    let band_style = BAND.mix(BAND_OPACITY).filled();
    chart
        .draw_series(
            data.band
                .iter()
                .map(|poly| Polygon::new(poly.clone(), band_style)),
        )
        .map_err(draw_err)?;
    let baseline_style = BASELINE.stroke_width(stroke(l.s));
    for seg in &data.baseline {
        chart
            .draw_series(LineSeries::new(seg.iter().copied(), baseline_style))
            .map_err(draw_err)?;
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(input.from as f64, 0.0), (input.to as f64, 0.0)],
            ZERO_LINE.stroke_width(stroke(l.s)),
        )))
        .map_err(draw_err)?;
    let reports_style = REPORTS.stroke_width(stroke(2.0 * l.s));
    for seg in &data.reports {
        chart
            .draw_series(LineSeries::new(seg.iter().copied(), reports_style))
            .map_err(draw_err)?;
    }

    if !data.has_reports {
        let centre = ((input.from as f64 + input.to as f64) / 2.0, l.y_max / 2.0);
        chart
            .draw_series(std::iter::once(Text::new(
                NO_DATA_TEXT,
                centre,
                text_style(
                    13.0 * l.s,
                    FontStyle::Normal,
                    &MUTED_INK,
                    Pos::new(HPos::Center, VPos::Center),
                ),
            )))
            .map_err(draw_err)?;
    }
    Ok(())
}

fn draw_header<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    l: &Layout,
) -> Result<(), ChartError> {
    let top_left = Pos::new(HPos::Left, VPos::Top);
    if let Some((title, y)) = &l.title {
        root.draw(&Text::new(
            title.as_str(),
            (px(l.pad), px(*y)),
            text_style(l.title_px, FontStyle::Bold, &INK, top_left),
        ))
        .map_err(draw_err)?;
    }
    if let Some((subtitle, y)) = &l.subtitle {
        root.draw(&Text::new(
            subtitle.as_str(),
            (px(l.pad), px(*y)),
            text_style(l.subtitle_px, FontStyle::Normal, &MUTED_INK, top_left),
        ))
        .map_err(draw_err)?;
    }

    let s = l.s;
    let label_style = text_style(
        l.legend_px,
        FontStyle::Normal,
        &MUTED_INK,
        Pos::new(HPos::Left, VPos::Center),
    );
    for &(item, x, mid) in &l.legend {
        let (left, right) = (px(x), px(x + LEGEND_SWATCH_W * s));
        let (top, bottom) = (
            px(mid - LEGEND_SWATCH_H * s / 2.0),
            px(mid + LEGEND_SWATCH_H * s / 2.0),
        );
        match item {
            LegendItem::Reports => root.draw(&PathElement::new(
                vec![(left, px(mid)), (right, px(mid))],
                REPORTS.stroke_width(stroke(2.0 * s)),
            )),
            LegendItem::NormalRange => root
                .draw(&Rectangle::new(
                    [(left, top), (right, bottom)],
                    BAND.mix(BAND_OPACITY).filled(),
                ))
                .and_then(|()| {
                    root.draw(&PathElement::new(
                        vec![(left, bottom), (right, bottom)],
                        BASELINE.stroke_width(stroke(s)),
                    ))
                }),
            LegendItem::Incident => root.draw(&Rectangle::new(
                [(left, top), (right, bottom)],
                INCIDENT.mix(INCIDENT_SWATCH_OPACITY).filled(),
            )),
        }
        .map_err(draw_err)?;
        root.draw(&Text::new(
            item.label(),
            (px(x + (LEGEND_SWATCH_W + LEGEND_LABEL_GAP) * s), px(mid)),
            label_style.clone(),
        ))
        .map_err(draw_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
