//! The detail pane: the selected workload's figures and conversations, or the
//! selected listener's queue and what it asked for.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Style},
    text::Line,
    widgets::{Block, Paragraph, Sparkline, Wrap},
};

use crate::model::{
    conversations::ConversationFigures, sample::Attribution, snapshot::WorkloadFigures,
};
use crate::top::{
    app::{App, ListenerRow, View},
    format::rate,
};

use super::common::pane_block;

/// What the selected listener's figures mean: the two facts about its limit.
fn listener_lines(r: &ListenerRow<'_>) -> Vec<Line<'static>> {
    let l = r.listener;
    let who = format!(
        "{} port {}{}",
        r.workload.workload.pod,
        l.port,
        l.process
            .as_ref()
            .map_or_else(String::new, |p| format!(" ({p})"))
    );
    let somaxconn = r.workload.netns_sysctls.and_then(|s| s.somaxconn);
    let asked = match l.asked() {
        Some(b) => format!("asked listen() for {b}"),
        None => "listened before nettune looked (asked: unknown)".into(),
    };
    let mut lines = vec![
        Line::from(who),
        Line::from(format!(
            "  {asked}; limit {} = min(asked, somaxconn when it listened)",
            l.limit
        )),
        Line::from(format!(
            "  queue {} of {}; overflows {} ({}/s, {})",
            l.queue,
            l.limit,
            l.overflows.total,
            rate(l.overflows.per_second),
            match l.attribution {
                Attribution::Exact => "counted per socket",
                Attribution::AtLimit => "namespace count, split at the limit",
                Attribution::None => "none seen",
            }
        )),
    ];
    if let Some(s) = somaxconn {
        let verdict = match l.requested_backlog {
            Some(b) if b <= s => format!(
                "  somaxconn is {s}: raising it changes nothing here; the application's backlog \
                 is the cap"
            ),
            _ if l.limit < s => format!(
                "  somaxconn is {s}, above its limit: it would get more only by listening again"
            ),
            _ => format!(
                "  somaxconn {s} caps it; a raise helps only once the application listens again"
            ),
        };
        lines.push(Line::from(verdict));
    }
    lines
}

fn detail_lines(w: &WorkloadFigures) -> Vec<Line<'static>> {
    let mut lines = vec![Line::from(format!(
        "{} (netns {}){}",
        w.workload.display_name(),
        w.netns,
        w.process
            .as_ref()
            .map_or_else(String::new, |p| format!(" · {p}"))
    ))];
    let mut reasons: Vec<_> = w.drops_by_reason.iter().collect();
    reasons.sort_by(|a, b| {
        b.1.per_second
            .total_cmp(&a.1.per_second)
            .then(b.1.total.cmp(&a.1.total))
    });
    for (reason, f) in reasons.iter().take(6) {
        lines.push(Line::from(format!(
            "  {reason:<18} {:>6}/s {:>9}",
            rate(f.per_second),
            f.total
        )));
    }
    if let Some(ct) = &w.conntrack {
        lines.push(Line::from(format!(
            "  conntrack entries {}  drops {}  insert failed {}",
            ct.entries, ct.drop.total, ct.insert_failed.total
        )));
    }
    if let Some(c) = &w.conversations {
        lines.extend(conversation_lines(c));
    }
    lines
}

/// A pod's DNS, handshakes, resets and ICMP errors, totals since watched.
fn conversation_lines(c: &ConversationFigures) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    if c.dns.queries.total > 0 {
        lines.push(Line::from(format!(
            "  dns {} queries: {} unanswered, {} failed, {} retries, mean {}",
            c.dns.queries.total,
            c.dns.unanswered.total,
            c.dns.failures().total,
            c.dns.retries.total,
            c.dns
                .latency
                .mean_seconds()
                .map_or_else(|| "-".into(), |m| format!("{:.1} ms", m * 1000.0))
        )));
    }
    if c.connects.attempts.total > 0 {
        lines.push(Line::from(format!(
            "  connects {}: {} refused, {} timed out, {} SYNs resent; RSTs {} sent {} received",
            c.connects.attempts.total,
            c.connects.refused.total,
            c.connects.timed_out.total,
            c.connects.syn_retransmits.total,
            c.resets_sent.total,
            c.resets_received.total
        )));
    }
    let errors: Vec<String> = c
        .icmp
        .received
        .iter()
        .filter(|(_, n)| n.total > 0)
        .map(|(kind, n)| format!("{kind} {}", n.total))
        .collect();
    if !errors.is_empty() {
        let mtu = c
            .icmp
            .smallest_mtu
            .map_or_else(String::new, |m| format!(" (path MTU {m})"));
        lines.push(Line::from(format!("  icmp in: {}{mtu}", errors.join(", "))));
    }
    lines
}

pub(super) fn draw_detail(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let block = pane_block(" detail ", false);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if app.view == View::Listeners {
        if let Some(r) = app.selected_listener() {
            let text = Paragraph::new(listener_lines(&r)).wrap(Wrap { trim: true });
            frame.render_widget(text, inner);
        }
        return;
    }
    let Some(w) = app.selected_row() else { return };
    let mut lines = detail_lines(w);
    if let Some(s) = &app.snapshot {
        for l in s.listeners.iter().filter(|l| l.netns == w.netns) {
            lines.push(Line::from(format!(
                "  listener :{} queue {}/{} asked {} overflows {}",
                l.port,
                l.queue,
                l.limit,
                l.asked().unwrap_or_else(|| "?".into()),
                l.overflows.total
            )));
        }
    }
    let spark_rows = if inner.height >= 10 { 4 } else { 0 };
    let [text, sparks] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(spark_rows)]).areas(inner);
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), text);
    if spark_rows > 0
        && let Some(h) = app.history.get(&w.netns)
    {
        let [d, r] = Layout::vertical([Constraint::Length(2), Constraint::Length(2)]).areas(sparks);
        let drops: Vec<u64> = h.drops.iter().copied().collect();
        let retx: Vec<u64> = h.retransmits.iter().copied().collect();
        frame.render_widget(
            Sparkline::default()
                .block(Block::default().title("drops/s"))
                .data(&drops),
            d,
        );
        frame.render_widget(
            Sparkline::default()
                .block(Block::default().title("retransmits/s"))
                .data(&retx)
                .style(Style::new().fg(Color::Yellow)),
            r,
        );
    }
}
