//! Storage lifecycle passes: online garbage collection (`gc`) and integrity checks (`fsck`). Both
//! read the whole store through `storage::inventory` and change it only through storage calls that
//! keep the durability rules.

pub mod cli;
pub mod fsck;
pub mod gc;
pub mod retention;

/// A one-line progress display on a terminal: `label done/total`, redrawn in place on stderr.
pub fn progress_line(label: &str, done: usize, total: usize) {
    use std::io::{IsTerminal, Write};
    let err = std::io::stderr();
    if !err.is_terminal() {
        return;
    }
    let width = 30usize;
    let filled = (done * width).checked_div(total).unwrap_or(width);
    let mut e = err.lock();
    let _ = write!(
        e,
        "\r{label:<8} [{}{}] {done}/{total}",
        "#".repeat(filled),
        " ".repeat(width - filled.min(width))
    );
    if done >= total {
        let _ = writeln!(e);
    }
    let _ = e.flush();
}
