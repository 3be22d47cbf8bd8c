//! Drawing the cluster view: a header with the Prometheus asked and what the
//! queries cost (or why they failed), the nodes or one node's pods or
//! listeners, a detail pane with the selected row's drop reasons, the footer.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Cell, Paragraph, Row as TableRow, Wrap},
};

use super::{
    app::ClusterApp,
    queries::{Column, Row},
};
use crate::top::{
    format::{bytes_rate, queue_bar, rate},
    ui::common::{draw_help, filter_title, footer, pane_block, sort_header, table_rows},
};

const KEYS: &str = "q quit  enter node  esc back  l listeners  s/S sort  o order  / filter  \
                    p pause  ↑↓ PgUp/PgDn  ? help";

const HELP: [&str; 11] = [
    "q           quit (Esc too, at the nodes)",
    "enter, →    the selected node's pods",
    "esc, ←      back to the nodes",
    "l           the node's listeners / its pods",
    "s / S       sort by the next / previous column",
    "o           reverse the order",
    "/           filter by text (Enter keeps, Esc clears)",
    "p           pause updates",
    "↑ ↓ PgUp PgDn Home End   move",
    "figures: rates over the last minute, from Prometheus",
    "?           this help (any key closes)",
];

/// Draws the whole screen.
pub fn draw(frame: &mut Frame<'_>, app: &ClusterApp) {
    let area = frame.area();
    let [header, body, bottom] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, header, app);
    if area.width >= 110 && area.height >= 16 {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(70), Constraint::Percentage(30)])
                .areas(body);
        draw_table(frame, left, app);
        draw_detail(frame, right, app);
    } else {
        draw_table(frame, body, app);
    }
    footer(frame, bottom, app.error.as_deref(), KEYS);
    if app.level().table.show_help {
        draw_help(frame, area, &HELP);
    }
}

fn draw_header(frame: &mut Frame<'_>, area: Rect, app: &ClusterApp) {
    let [line1, line2] =
        Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(area);
    let pods: f64 = app
        .nodes
        .iter()
        .map(|n| n.value(Column::Pods))
        .fold(0.0, |a, b| a + b);
    let place = app
        .node
        .as_ref()
        .map_or_else(String::new, |n| format!(" · node {n}"));
    let paused = if app.level().table.paused {
        " [PAUSED]"
    } else {
        ""
    };
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(
                "nettune cluster ",
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!(
                "· prometheus {} · {} nodes · {pods:.0} workloads{place}{paused}",
                app.source,
                app.nodes.len()
            )),
        ])),
        line1,
    );
    let age = app.updated.map_or_else(
        || "none yet".into(),
        |t| format!("{}s ago", t.elapsed().as_secs()),
    );
    let (text, style) = match (&app.error, &app.cost) {
        (Some(_), _) => (
            format!("Prometheus does not answer (below); figures from {age}"),
            Style::new().fg(Color::Red),
        ),
        (None, Some(c)) => (
            format!(
                "queries {} in {} ms · samples read {} · series returned {} · figures from {age}",
                c.queries,
                c.elapsed.as_millis(),
                c.samples_read
                    .map_or_else(|| "?".into(), |n| rate(n as f64)),
                c.series
            ),
            Style::new().fg(Color::DarkGray),
        ),
        (None, None) => (format!("waiting for {}…", app.source), Style::new()),
    };
    frame.render_widget(Paragraph::new(Span::styled(text, style)), line2);
}

fn cell(row: &Row, column: Column) -> String {
    match (column, row.values.get(&column)) {
        (_, None) => "-".into(),
        (Column::Rx | Column::Tx, Some(v)) => bytes_rate(*v),
        (Column::Pods | Column::Tuning, Some(v)) => format!("{v:.0}"),
        (_, Some(v)) => rate(*v),
    }
}

fn label(column: Column) -> &'static str {
    match column {
        Column::Name => "NAME",
        Column::Pods => "WKLDS",
        Column::Rx => "RX/s",
        Column::Tx => "TX/s",
        Column::Drops => "DROP/s",
        Column::Retransmits => "RETX/s",
        Column::Overflows => "OVFL/s",
        Column::DnsFailures => "DNSERR/s",
        Column::Tuning => "TUNED/h",
    }
}

fn draw_table(frame: &mut Frame<'_>, area: Rect, app: &ClusterApp) {
    if app.node.is_some() && app.show_listeners {
        return draw_listeners(frame, area, app);
    }
    let level = app.level();
    let (columns, first, what): (&[Column], _, _) = match &app.node {
        None => (&Column::NODES, "NODE", "nodes".to_owned()),
        Some(n) => (&Column::PODS, "POD", format!("pods of {n}")),
    };
    // Narrow terminals lose the byte rates first.
    let narrow = area.width < 90;
    let shown: Vec<Column> = columns
        .iter()
        .copied()
        .filter(|c| !narrow || !matches!(c, Column::Rx | Column::Tx | Column::Tuning))
        .collect();
    let header: Vec<Cell<'static>> = shown
        .iter()
        .map(|c| {
            let text = if *c == Column::Name { first } else { label(*c) };
            sort_header(text, level.sort == *c, &level.table)
        })
        .collect();
    let widths: Vec<Constraint> = shown
        .iter()
        .map(|c| match c {
            Column::Name => Constraint::Min(16),
            c => Constraint::Length(label(*c).len().max(7) as u16 + 1),
        })
        .collect();
    let rows = app.rows();
    let body = rows.iter().map(|r| {
        let cells: Vec<String> = shown
            .iter()
            .map(|c| match c {
                Column::Name => r.name.clone(),
                c => cell(r, *c),
            })
            .collect();
        let style = if r.value(Column::Drops) > 0.0 {
            Style::new().fg(Color::Red)
        } else {
            Style::new()
        };
        TableRow::new(cells).style(style)
    });
    let title = format!(" {what} ({}){}", rows.len(), filter_title(&level.table));
    table_rows(
        frame,
        area,
        (&level.table, true),
        &title,
        (header, widths),
        body,
        rows.len(),
    );
}

fn draw_listeners(frame: &mut Frame<'_>, area: Rect, app: &ClusterApp) {
    let rows = app.listener_rows();
    let header = vec!["POD", "PORT", "PROCESS", "QUEUE/LIMIT", "OVFL/s"];
    let widths = vec![
        Constraint::Min(14),
        Constraint::Length(6),
        Constraint::Length(12),
        Constraint::Length(16),
        Constraint::Length(8),
    ];
    let body = rows.iter().map(|l| {
        let queue = match (l.queue, l.limit) {
            (Some(q), Some(limit)) => queue_bar(q as u32, limit as u32, 6),
            _ => "-".into(),
        };
        let full = l.queue.zip(l.limit).is_some_and(|(q, limit)| q >= limit);
        let style = if full || l.overflows > 0.0 {
            Style::new().fg(Color::Red)
        } else {
            Style::new()
        };
        TableRow::new(vec![
            l.pod.clone(),
            l.port.clone(),
            l.process.clone(),
            queue,
            rate(l.overflows),
        ])
        .style(style)
    });
    let table = &app.node_level.table;
    let title = format!(
        " listeners of {} ({}){}",
        app.node.as_deref().unwrap_or("?"),
        rows.len(),
        filter_title(table)
    );
    table_rows(
        frame,
        area,
        (table, true),
        &title,
        (header, widths),
        body,
        rows.len(),
    );
}

fn draw_detail(frame: &mut Frame<'_>, area: Rect, app: &ClusterApp) {
    let block = pane_block(" detail ", false);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(r) = app.selected_row().filter(|_| !app.show_listeners) else {
        return;
    };
    let mut lines = vec![Line::from(r.name.clone())];
    let mut reasons: Vec<_> = r.reasons.iter().collect();
    reasons.sort_by(|a, b| b.1.total_cmp(a.1));
    if reasons.is_empty() {
        lines.push(Line::from("  no drops in the last minute"));
    }
    for (reason, per_second) in reasons.iter().take(8) {
        lines.push(Line::from(format!(
            "  {reason:<20} {:>7}/s",
            rate(**per_second)
        )));
    }
    if app.node.is_none() {
        lines.push(Line::from(""));
        lines.push(Line::from("enter: its pods; l there: its listeners"));
    }
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), inner);
}
