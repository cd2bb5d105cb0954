//! Fitting table columns into a width without ever showing a wrong number:
//! text may be shortened with an ellipsis, a number never is. When even the
//! shortest form of every column does not fit, whole columns are dropped,
//! least important first.

use ratatui::layout::Constraint;

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Shown whole or not at all.
    Number,
    /// Shortened with an ellipsis down to `min` characters.
    Text { min: u16 },
}

#[derive(Debug, Clone)]
pub struct Column {
    pub title: &'static str,
    pub kind: Kind,
    /// Higher is kept longer.
    pub keep: u8,
    /// The widest cell (or the title), in characters.
    pub natural: u16,
}

impl Column {
    pub fn new<'a>(title: &'static str, kind: Kind, keep: u8, cells: impl IntoIterator<Item = &'a str>) -> Column {
        let widest = cells.into_iter().map(|c| c.chars().count()).max().unwrap_or(0);
        Column { title, kind, keep, natural: widest.max(title.chars().count()).min(u16::MAX as usize) as u16 }
    }

    fn min(&self) -> u16 {
        match self.kind {
            Kind::Number => self.natural,
            Kind::Text { min } => min.min(self.natural),
        }
    }
}

/// Space between columns (ratatui's default).
const GAP: u16 = 1;

/// The width each column gets (None: dropped) within `width`.
pub fn fit(columns: &[Column], width: u16) -> Vec<Option<u16>> {
    let mut kept: Vec<bool> = vec![true; columns.len()];
    let need = |kept: &[bool]| -> u32 {
        let shown: Vec<&Column> = columns.iter().zip(kept).filter(|(_, k)| **k).map(|(c, _)| c).collect();
        shown.iter().map(|c| c.min() as u32).sum::<u32>() + (shown.len().saturating_sub(1) as u32) * GAP as u32
    };
    while need(&kept) > width as u32 {
        let drop = (0..columns.len()).filter(|&i| kept[i]).min_by_key(|&i| (columns[i].keep, std::cmp::Reverse(i)));
        match drop {
            Some(i) => kept[i] = false,
            None => break,
        }
    }
    let mut spare = (width as u32).saturating_sub(need(&kept));
    columns
        .iter()
        .zip(&kept)
        .map(|(c, &k)| {
            k.then(|| {
                let grow = (c.natural - c.min()) as u32;
                let extra = grow.min(spare);
                spare -= extra;
                c.min() + extra as u16
            })
        })
        .collect()
}

/// Ratatui constraints for the kept columns: fixed widths, and the last text
/// column takes what is left.
pub fn constraints(columns: &[Column], widths: &[Option<u16>]) -> Vec<Constraint> {
    let last_text = columns.iter().zip(widths).rposition(|(c, w)| w.is_some() && matches!(c.kind, Kind::Text { .. }));
    widths
        .iter()
        .enumerate()
        .filter_map(|(i, w)| w.map(|w| if Some(i) == last_text { Constraint::Min(w) } else { Constraint::Length(w) }))
        .collect()
}

/// Keeps the cells of kept columns, shortening text to its width.
pub fn cells<T>(columns: &[Column], widths: &[Option<u16>], values: Vec<T>, text: impl Fn(T, usize) -> T) -> Vec<T> {
    values
        .into_iter()
        .zip(columns.iter().zip(widths))
        .filter_map(|(v, (c, w))| {
            w.map(|w| match c.kind {
                Kind::Number => v,
                Kind::Text { .. } => text(v, w as usize),
            })
        })
        .collect()
}

/// A table of styled text cells fitted to `width` (the panel's inner width):
/// rows, with `selected` highlighted, the header and the column widths.
pub fn table<'a>(
    columns: &[Column],
    width: u16,
    values: Vec<Vec<(String, ratatui::style::Style)>>,
    selected: Option<usize>,
) -> ratatui::widgets::Table<'a> {
    use ratatui::text::Span;
    use ratatui::widgets::{Cell, Row, Table};
    let widths = fit(columns, width);
    let rows: Vec<Row> = values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let cells = cells(columns, &widths, v, |(t, st), w| (super::cut(&t, w), st));
            let row = Row::new(cells.into_iter().map(|(t, st)| Cell::from(Span::styled(t, st))));
            if Some(i) == selected {
                row.style(crate::style::selected())
            } else {
                row
            }
        })
        .collect();
    let header = Row::new(titles(columns, &widths)).style(crate::style::dim());
    Table::new(rows, constraints(columns, &widths)).header(header)
}

/// The titles of kept columns.
pub fn titles(columns: &[Column], widths: &[Option<u16>]) -> Vec<&'static str> {
    columns.iter().zip(widths).filter(|(_, w)| w.is_some()).map(|(c, _)| c.title).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Vec<Column> {
        vec![
            Column::new("topic", Kind::Text { min: 4 }, 3, ["orders-of-the-day"]),
            Column::new("p", Kind::Number, 4, ["12"]),
            Column::new("offset", Kind::Number, 5, ["1234567890"]),
            Column::new("key", Kind::Text { min: 3 }, 1, ["customer-42"]),
            Column::new("error", Kind::Text { min: 6 }, 2, ["the sink said no"]),
        ]
    }

    #[test]
    fn everything_fits_at_its_natural_width_when_there_is_room() {
        assert_eq!(fit(&cols(), 200), vec![Some(17), Some(2), Some(10), Some(11), Some(16)]);
    }

    #[test]
    fn text_shrinks_before_anything_is_dropped_and_numbers_never_shrink() {
        let w = fit(&cols(), 40);
        assert_eq!(w[1], Some(2));
        assert_eq!(w[2], Some(10), "the offset is whole");
        let used: u16 = w.iter().flatten().sum::<u16>() + 4;
        assert!(used <= 40, "{w:?}");
    }

    #[test]
    fn whole_columns_go_least_important_first() {
        // 4 + 2 + 10 + 6 + 3 gaps = 25: the key (min 3 + gap) no longer fits.
        let w = fit(&cols(), 26);
        assert_eq!(w[3], None, "{w:?}");
        assert_eq!(w[2], Some(10));
        let w = fit(&cols(), 12);
        assert_eq!(w, vec![None, None, Some(10), None, None], "at the least the offset, whole");
        assert_eq!(fit(&cols(), 5), vec![None; 5], "nothing rather than a cut number");
    }
}
