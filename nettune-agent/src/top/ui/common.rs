//! What every screen of `nettune top` draws the same way, the node's and the
//! cluster's: sortable column headers, the table with its selection and filter
//! in the title, framed panes, the footer (an error, else the keys) and the help.

use ratatui::{
    Frame,
    layout::{Constraint, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState},
};

use crate::top::table::Controls;

/// A column header, underlined with an arrow when rows are sorted by it.
pub(in crate::top) fn sort_header(label: &str, sorted: bool, table: &Controls) -> Cell<'static> {
    if sorted {
        let arrow = if table.descending { "▼" } else { "▲" };
        Cell::from(format!("{label}{arrow}"))
            .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED))
    } else {
        Cell::from(label.to_owned())
    }
}

/// A table: `count` rows of `body` under a header, framed as focused or not,
/// the selected row highlighted.
pub(in crate::top) fn table_rows<'a, H: Into<Cell<'a>>>(
    frame: &mut Frame<'_>,
    area: Rect,
    (table, focused): (&Controls, bool),
    title: &str,
    (header, widths): (Vec<H>, Vec<Constraint>),
    body: impl IntoIterator<Item = Row<'a>>,
    count: usize,
) {
    let widget = Table::new(body, widths)
        .header(Row::new(header).style(Style::new().fg(Color::Cyan)))
        .block(pane_block(title, focused))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected((count > 0).then_some(table.selected));
    frame.render_stateful_widget(widget, area, &mut state);
}

/// The filter, as shown in a table's title.
pub(in crate::top) fn filter_title(table: &Controls) -> String {
    if table.editing_filter || !table.filter.is_empty() {
        format!(
            " filter: {}{} ",
            table.filter,
            if table.editing_filter { "_" } else { "" }
        )
    } else {
        String::new()
    }
}

/// A framed pane, its border cyan when the arrow keys move in it.
pub(in crate::top) fn pane_block(title: &str, focused: bool) -> Block<'_> {
    let style = if focused {
        Style::new().fg(Color::Cyan)
    } else {
        Style::new()
    };
    Block::default()
        .borders(Borders::ALL)
        .border_style(style)
        .title(title)
}

/// The last line: the error in red, else the keys.
pub(in crate::top) fn footer(frame: &mut Frame<'_>, area: Rect, error: Option<&str>, keys: &str) {
    let text = match error {
        Some(e) => Span::styled(format!("error: {e}"), Style::new().fg(Color::Red)),
        None => Span::styled(keys.to_owned(), Style::new().fg(Color::DarkGray)),
    };
    frame.render_widget(Paragraph::new(Line::from(text)), area);
}

/// The help popup: `lines`, centred, over whatever is drawn.
pub(in crate::top) fn draw_help(frame: &mut Frame<'_>, area: Rect, lines: &[&str]) {
    let width = area.width.min(60);
    let height = area.height.min(lines.len() as u16 + 2);
    let popup = Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    );
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines.iter().map(|l| Line::from(*l)).collect::<Vec<_>>())
            .block(Block::default().borders(Borders::ALL).title(" keys ")),
        popup,
    );
}
