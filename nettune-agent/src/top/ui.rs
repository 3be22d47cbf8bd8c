//! Drawing `nettune top`: header with the node's vital signs, the workload table,
//! the detail and tuning panes, the footer. Layout degrades with the terminal:
//! panes go first, then columns, down to a bare table at 40×12.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Cell, Gauge, Paragraph, Row, Wrap},
};

use super::{
    app::{App, Pane, SortColumn, View},
    format::{bytes_rate, duration, queue_bar, rate},
};
use crate::model::snapshot::Snapshot;

pub(super) mod common;
mod detail;

use common::{draw_help, filter_title, footer, pane_block, sort_header, table_rows};
use detail::draw_detail;

const KEYS: &str = "q quit  l listeners  d dns  s/S sort  o order  / filter  p pause  tab pane  \
                    ↑↓ PgUp/PgDn  r reset  ? help";

/// Draws the whole screen.
pub fn draw(frame: &mut Frame<'_>, app: &App) {
    let area = frame.area();
    let tall = area.height >= 16;
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(if tall { 3 } else { 1 }),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, header, app, tall);
    let wide = area.width >= 100 && area.height >= 20;
    if wide {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)])
                .areas(body);
        draw_table(frame, left, app);
        let [detail, tuning] =
            Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(right);
        draw_detail(frame, detail, app);
        draw_tuning(frame, tuning, app);
    } else if area.height >= 24 {
        let [table, detail] =
            Layout::vertical([Constraint::Min(6), Constraint::Length(8)]).areas(body);
        draw_table(frame, table, app);
        draw_detail(frame, detail, app);
    } else {
        draw_table(frame, body, app);
    }
    draw_footer(frame, footer, app);
    if app.table.show_help {
        draw_help(frame, area, &HELP);
    }
}

fn draw_header(frame: &mut Frame<'_>, area: Rect, app: &App, tall: bool) {
    let Some(s) = &app.snapshot else {
        frame.render_widget(
            Paragraph::new(format!("nettune top — waiting for {}…", app.source)),
            area,
        );
        return;
    };
    let paused = if app.table.paused { " [PAUSED]" } else { "" };
    let context = s
        .context
        .as_ref()
        .map_or_else(String::new, |c| format!(" · {}", c.summary()));
    let title = Line::from(vec![
        Span::styled("nettune ", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "{} · kernel {} · {:?} · up {}{context}{paused}",
            s.node,
            s.kernel,
            s.mode,
            duration(s.uptime_seconds)
        )),
    ]);
    if !tall {
        frame.render_widget(Paragraph::new(title), area);
        return;
    }
    let [line1, line2, line3] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(title), line1);
    draw_conntrack(frame, line2, s);
    let t = &s.totals;
    frame.render_widget(
        Paragraph::new(format!(
            "listen ovfl/s {}  SYN drops/s {}  retx seg/s {}  drops/s {}  backlog drops/s {}  \
             dns unans/s {}  conn fail/s {}",
            rate(t.listen_overflows_per_second),
            rate(t.syn_queue_full_drops_per_second),
            rate(t.retransmit_segments_per_second),
            rate(t.drops_per_second),
            rate(t.backlog_drops_per_second),
            rate(t.dns_unanswered_per_second),
            rate(t.connect_failures_per_second),
        )),
        line3,
    );
}

fn draw_conntrack(frame: &mut Frame<'_>, area: Rect, s: &Snapshot) {
    let (entries, max) = (
        s.totals.conntrack_entries.unwrap_or(0),
        s.conntrack_max.unwrap_or(0),
    );
    let ratio = if max > 0 {
        (entries as f64 / max as f64).min(1.0)
    } else {
        0.0
    };
    let color = if ratio >= 0.95 {
        Color::Red
    } else if ratio >= 0.8 {
        Color::Yellow
    } else {
        Color::Green
    };
    let gauge = Gauge::default()
        .gauge_style(Style::new().fg(color))
        .ratio(ratio)
        .label(format!(
            "conntrack {entries}/{max} ({:.0} %)",
            ratio * 100.0
        ));
    frame.render_widget(gauge, area);
}

fn header_cell(label: &str, column: SortColumn, app: &App) -> Cell<'static> {
    sort_header(label, app.sort == column, &app.table)
}

fn draw_table(frame: &mut Frame<'_>, area: Rect, app: &App) {
    match app.view {
        View::Listeners => return draw_listeners(frame, area, app),
        View::Dns => return draw_dns(frame, area, app),
        View::Workloads => {}
    }
    let rows = app.rows();
    let narrow = area.width < 90;
    let mut header = vec![];
    let mut widths = vec![];
    // Pods as `namespace/name`; other workloads by their own name.
    header.push(header_cell("POD", SortColumn::Pod, app));
    widths.push(Constraint::Min(14));

    for (label, column) in [
        ("RX/s", SortColumn::Rx),
        ("TX/s", SortColumn::Tx),
        ("DROP/s", SortColumn::Drops),
    ] {
        header.push(header_cell(label, column, app));
        widths.push(Constraint::Length(8));
    }
    if !narrow {
        header.push(Cell::from("TOP REASON"));
        widths.push(Constraint::Length(16));
    }
    for (label, column) in [
        ("RETX/s", SortColumn::Retransmits),
        ("OVFL/s", SortColumn::Overflows),
    ] {
        header.push(header_cell(label, column, app));
        widths.push(Constraint::Length(8));
    }
    if !narrow {
        header.push(Cell::from("CONN/s"));
        widths.push(Constraint::Length(8));
        header.push(header_cell("CFAIL/s", SortColumn::ConnectFailures, app));
        widths.push(Constraint::Length(8));
    }
    let body = rows.iter().map(|w| {
        let iface = w.interface.as_ref();
        let mut cells = vec![w.workload.display_name()];
        cells.push(iface.map_or_else(|| "-".into(), |i| bytes_rate(i.rx_bytes.per_second)));
        cells.push(iface.map_or_else(|| "-".into(), |i| bytes_rate(i.tx_bytes.per_second)));
        cells.push(rate(w.drops.per_second));
        if !narrow {
            cells.push(
                w.top_drop_reason()
                    .map_or_else(|| "-".into(), |(r, _)| r.to_owned()),
            );
        }
        cells.push(rate(w.retransmit_segments.per_second));
        cells.push(rate(w.listen_overflows.per_second));
        if !narrow {
            let connects = w.conversations.as_ref().map(|c| &c.connects);
            cells.push(connects.map_or_else(|| "-".into(), |c| rate(c.attempts.per_second)));
            cells.push(connects.map_or_else(
                || "-".into(),
                |c| rate(c.refused.per_second + c.timed_out.per_second),
            ));
        }
        Row::new(cells)
    });
    let title = format!(" workloads ({}){}", rows.len(), filter_title(&app.table));
    draw_rows(frame, area, app, &title, (header, widths), body, rows.len());
}

fn draw_rows<'a, H: Into<Cell<'a>>>(
    frame: &mut Frame<'_>,
    area: Rect,
    app: &App,
    title: &str,
    columns: (Vec<H>, Vec<Constraint>),
    body: impl IntoIterator<Item = Row<'a>>,
    count: usize,
) {
    let focused = app.pane == Pane::Workloads;
    table_rows(
        frame,
        area,
        (&app.table, focused),
        title,
        columns,
        body,
        count,
    );
}

/// One row per listening socket: who, what it asked for, what it got, how full.
fn draw_listeners(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let rows = app.listener_rows();
    let narrow = area.width < 76;
    let mut header = vec![
        "POD",
        "PORT",
        "PROCESS",
        "QUEUE/LIMIT",
        "ASKED",
        "SOMAXCONN",
    ];
    let mut widths = vec![
        Constraint::Min(12),
        Constraint::Length(5),
        Constraint::Length(10),
        Constraint::Length(16),
        Constraint::Length(7),
        Constraint::Length(9),
    ];
    if narrow {
        header.remove(5);
        widths.remove(5);
    }
    header.push("OVFL/s");
    widths.push(Constraint::Length(7));
    let body = rows.iter().map(|r| {
        let l = r.listener;
        let mut cells = vec![
            r.workload.workload.pod.clone(),
            l.port.to_string(),
            l.process.clone().unwrap_or_else(|| "?".into()),
            queue_bar(l.queue, l.limit, 6),
            l.asked().unwrap_or_else(|| "unknown".into()),
        ];
        if !narrow {
            cells.push(
                r.workload
                    .netns_sysctls
                    .and_then(|s| s.somaxconn)
                    .map_or_else(|| "?".into(), |v| v.to_string()),
            );
        }
        cells.push(rate(l.overflows.per_second));
        let style = if l.queue >= l.limit {
            Style::new().fg(Color::Red)
        } else {
            Style::new()
        };
        Row::new(cells).style(style)
    });
    let title = format!(" listeners ({}){}", rows.len(), filter_title(&app.table));
    draw_rows(frame, area, app, &title, (header, widths), body, rows.len());
}

/// One row per workload that asked DNS: how much, how much went unanswered or
/// failed, and how long answers took.
fn draw_dns(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let rows = app.dns_rows();
    let mut header = vec![header_cell("POD", SortColumn::Pod, app)];
    header.extend(["Q/s", "ANS/s"].map(Cell::from));
    header.push(header_cell("UNANS/s", SortColumn::DnsUnanswered, app));
    header.extend(["FAIL/s", "NXDOM/s", "RETRY/s", "MEAN ms", ">1s"].map(Cell::from));
    let mut widths = vec![Constraint::Min(14)];
    widths.extend([Constraint::Length(8); 8]);
    let body = rows.iter().filter_map(|w| {
        let dns = &w.conversations.as_ref()?.dns;
        let nxdomain = dns.responses.get("NXDOMAIN").map_or(0.0, |r| r.per_second);
        let beyond_second = dns
            .latency
            .buckets
            .last()
            .map_or(0, |(_, upto)| dns.latency.count.saturating_sub(*upto));
        let cells = vec![
            w.workload.display_name(),
            rate(dns.queries.per_second),
            rate(dns.responses_total().per_second),
            rate(dns.unanswered.per_second),
            rate(dns.failures().per_second),
            rate(nxdomain),
            rate(dns.retries.per_second),
            dns.latency
                .mean_seconds()
                .map_or_else(|| "-".into(), |m| format!("{:.1}", m * 1000.0)),
            beyond_second.to_string(),
        ];
        let style = if dns.unanswered.per_second > 0.0 {
            Style::new().fg(Color::Red)
        } else {
            Style::new()
        };
        Some(Row::new(cells).style(style))
    });
    let title = format!(" dns ({}){}", rows.len(), filter_title(&app.table));
    draw_rows(frame, area, app, &title, (header, widths), body, rows.len());
}

fn draw_tuning(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let mut lines: Vec<Line<'static>> = Vec::new();
    match app.tuning.as_ref() {
        None => lines.push(Line::from("tuner off (mode observe, or no journal)")),
        Some(t) => {
            for m in &t.managed {
                lines.push(Line::from(format!(
                    "{} on {}: {} (found {}, ceiling {}){}",
                    m.sysctl,
                    m.target,
                    m.current.as_deref().unwrap_or("?").replace('\t', " "),
                    m.original.replace('\t', " "),
                    m.ceiling,
                    if m.stood_down { " STOOD DOWN" } else { "" }
                )));
            }
            for e in t.effects.iter().rev().take(5) {
                lines.push(Line::from(format!(
                    "<{}> {} {} → {} on {}: {}",
                    e.verdict.label(),
                    e.sysctl,
                    e.from.replace('\t', " "),
                    e.to.replace('\t', " "),
                    e.target,
                    e.detail
                )));
            }
            for d in t.recent.iter().rev() {
                lines.push(Line::from(format!(
                    "[{}] {} {} → {} because {}",
                    d.result.label(),
                    d.sysctl,
                    d.from.as_deref().unwrap_or("?").replace('\t', " "),
                    d.to.as_deref().unwrap_or("-").replace('\t', " "),
                    d.reason.as_deref().unwrap_or(&d.evidence)
                )));
            }
            if lines.is_empty() {
                lines.push(Line::from("no decisions yet"));
            }
        }
    }
    let scroll = u16::try_from(app.tuning_scroll).unwrap_or(u16::MAX);
    frame.render_widget(
        Paragraph::new(lines)
            .block(pane_block(" tuning ", app.pane == Pane::Tuning))
            .wrap(Wrap { trim: true })
            .scroll((scroll, 0)),
        area,
    );
}

fn draw_footer(frame: &mut Frame<'_>, area: Rect, app: &App) {
    footer(frame, area, app.error.as_deref(), KEYS);
}

const HELP: [&str; 11] = [
    "q, Esc      quit",
    "s / S       sort by the next / previous column",
    "o           reverse the order",
    "/           filter by text (Enter keeps, Esc clears)",
    "p           pause updates",
    "l           listeners view / workloads view",
    "d           DNS view (pods that asked, worst first)",
    "tab         switch pane (table / tuning)",
    "↑ ↓ PgUp PgDn Home End   move",
    "r           reset the sparklines",
    "?           this help (any key closes)",
];
