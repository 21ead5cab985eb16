//! The block's grammar, on text alone: where registryd's block is in a hosts file, the file with
//! the block rendered or removed, and what looks like a block but is not one. No I/O; `file` writes
//! the result.

use std::net::IpAddr;

pub const BEGIN: &str = "# BEGIN registryd managed block (do not edit; see node.hostnames)";
pub const END: &str = "# END registryd managed block";

/// Marker text without its suffix: a line holding it that is not exactly a marker is damage to
/// report, and the user's.
const BEGIN_TEXT: &str = "BEGIN registryd managed block";
const END_TEXT: &str = "END registryd managed block";

/// One line of the file: `text[start..next]`, of which `text[start..end]` is the content (without
/// its `\n` and one `\r` before it; an unended last line loses a final `\r` too, so that the line
/// ending registryd adds before a block it appends cannot change what the line is).
#[derive(Debug, Clone, Copy)]
struct Line {
    start: usize,
    end: usize,
    next: usize,
    /// Whether the line ends in `\n` (only the last line of a file may not).
    ended: bool,
}

fn lines(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let (next, ended) = match text[start..].find('\n') {
            Some(i) => (start + i + 1, true),
            None => (text.len(), false),
        };
        let body = if ended { next - 1 } else { next };
        let end = if body > start && text.as_bytes().get(body - 1) == Some(&b'\r') {
            body - 1
        } else {
            body
        };
        out.push(Line {
            start,
            end,
            next,
            ended,
        });
        start = next;
    }
    out
}

/// The file's structure: its blocks (the line of a whole-line `BEGIN` and of the next whole-line
/// `END`, with no `BEGIN` line between them) and the marker lines outside any block. Everything
/// that is not in a block is the user's, orphan markers included.
struct Layout {
    lines: Vec<Line>,
    blocks: Vec<(usize, usize)>,
    /// Marker lines in no block, in file order: (line index, is it a BEGIN).
    orphans: Vec<(usize, bool)>,
}

impl Layout {
    fn of(text: &str) -> Layout {
        let lines = lines(text);
        let mut blocks = Vec::new();
        let mut orphans = Vec::new();
        let mut open = None;
        for (i, l) in lines.iter().enumerate() {
            match &text[l.start..l.end] {
                BEGIN => {
                    if let Some(b) = open.replace(i) {
                        orphans.push((b, true));
                    }
                }
                END => match open.take() {
                    Some(b) => blocks.push((b, i)),
                    None => orphans.push((i, false)),
                },
                _ => {}
            }
        }
        if let Some(b) = open {
            orphans.push((b, true));
        }
        Layout {
            lines,
            blocks,
            orphans,
        }
    }

    /// Which blocks must stay when registryd takes its entries out (`keep_last`: false) or keeps
    /// them in one block (`keep_last`: true, the last block; a block appended at the end of the
    /// file is the last, and keeping it there never moves the file's final line ending).
    ///
    /// A block between an orphan `BEGIN` and an orphan `END` stays too: taken out, it would leave
    /// those two as a block, and the next apply would take the user's lines between them as
    /// registryd's. Of the blocks that could keep such a pair apart, the first stays.
    fn kept(&self, keep_last: bool) -> Vec<bool> {
        // Whether the last marker that stays is an orphan BEGIN.
        let mut open_orphan = false;
        let mut orphans = self.orphans.iter().peekable();
        let blocks = self.blocks.len();
        self.blocks
            .iter()
            .enumerate()
            .map(|(k, &(_, end))| {
                while let Some(&&(line, is_begin)) = orphans.peek() {
                    if line > end {
                        break;
                    }
                    open_orphan = is_begin;
                    orphans.next();
                }
                let next_is_end = orphans.peek().is_some_and(|&&(_, is_begin)| !is_begin);
                let kept = (open_orphan && next_is_end) || (keep_last && k + 1 == blocks);
                if kept {
                    open_orphan = false;
                }
                kept
            })
            .collect()
    }
}

/// The line ending of the lines registryd writes: CRLF when the file uses it, else LF.
fn eol_of(text: &str) -> &'static str {
    if text.contains("\r\n") { "\r\n" } else { "\n" }
}

/// Rewrites the file's blocks: the kept ones with `entries` (a kept block keeps its own line
/// ending, and an unended `END` stays unended), the others taken out. Every other line is copied
/// byte for byte.
fn rewrite(text: &str, layout: &Layout, kept: &[bool], entries: &[(IpAddr, String)]) -> String {
    let mut out = String::with_capacity(text.len() + 64 * (entries.len() + 2));
    let mut next_line = 0;
    for (&(b, e), &keep) in layout.blocks.iter().zip(kept) {
        // Blocks index this layout's own lines, in file order (a block that did not would be left
        // as it is, copied with the lines after it).
        let (Some(before), Some(&begin), Some(&end)) = (
            layout.lines.get(next_line..b),
            layout.lines.get(b),
            layout.lines.get(e),
        ) else {
            continue;
        };
        for l in before {
            out.push_str(&text[l.start..l.next]);
        }
        next_line = e + 1;
        // A BEGIN line always has its ending (an END line follows it).
        let eol = &text[begin.end..begin.next];
        if keep {
            push_block(&mut out, eol, entries, end.ended);
        } else if !end.ended {
            // The block was appended to a file without a final newline, and the line ending before
            // it was registryd's: it goes with the block. (Appending never follows an empty line,
            // so the ending of one is the user's.)
            let mut cut = out.len();
            if out.ends_with('\n') {
                cut -= 1;
                if eol == "\r\n" && out[..cut].ends_with('\r') {
                    cut -= 1;
                }
            }
            if cut > 0 && !out[..cut].ends_with('\n') {
                out.truncate(cut);
            }
        }
    }
    for l in layout.lines.get(next_line..).unwrap_or_default() {
        out.push_str(&text[l.start..l.next]);
    }
    out
}

fn push_block(out: &mut String, eol: &str, entries: &[(IpAddr, String)], ended: bool) {
    out.push_str(BEGIN);
    out.push_str(eol);
    for (ip, host) in entries {
        out.push_str(&format!("{ip}\t{host}{eol}"));
    }
    out.push_str(END);
    if ended {
        out.push_str(eol);
    }
}

/// The file without registryd's entries: every block taken out (but one that keeps two orphan
/// markers apart, which stays without entries; see [`Layout::kept`]).
pub fn remove_block(text: &str) -> String {
    let layout = Layout::of(text);
    if layout.blocks.is_empty() {
        return text.to_string();
    }
    rewrite(text, &layout, &layout.kept(false), &[])
}

/// The file with the block holding `entries` (address, hostname); without a block when `entries`
/// is empty.
///
/// The last block holds them, and the others go (but for one that keeps two orphan markers apart,
/// which holds them too); with no block, one is appended at the end of the file. A `BEGIN` without
/// its `END`, an `END` without its `BEGIN`, and marker text that is not a whole line are the user's
/// lines and stay as they are ([`damage`] lists them, for the log).
pub fn render(text: &str, entries: &[(IpAddr, String)]) -> String {
    if entries.is_empty() {
        return remove_block(text);
    }
    let layout = Layout::of(text);
    if !layout.blocks.is_empty() {
        return rewrite(text, &layout, &layout.kept(true), entries);
    }
    let eol = eol_of(text);
    let mut out = String::from(text);
    let ended = text.is_empty() || text.ends_with('\n');
    if !ended {
        out.push_str(eol);
    }
    push_block(&mut out, eol, entries, ended);
    out
}

/// Something in the hosts file that looks like registryd's but is not a well-formed block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// 1-based line number.
    pub line: usize,
    pub kind: DamageKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// A `BEGIN` line with no `END` line after it before the next `BEGIN` or the end of the file.
    BeginWithoutEnd,
    /// An `END` line with no `BEGIN` line before it.
    EndWithoutBegin,
    /// Marker text in a line that is not exactly a marker (commented out, indented, edited).
    NotAWholeLine,
    /// A second block, kept because it stands between an orphan `BEGIN` and an orphan `END`.
    ExtraBlock,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            DamageKind::BeginWithoutEnd => "BEGIN marker without its END",
            DamageKind::EndWithoutBegin => "END marker without its BEGIN",
            DamageKind::NotAWholeLine => "marker text that is not a whole marker line",
            DamageKind::ExtraBlock => "a second registryd block between damaged markers",
        };
        write!(f, "line {}: {what}", self.line)
    }
}

/// What in `text` looks like registryd's block but is not one, in file order. registryd leaves
/// all of it alone: only the operator can tell what it was meant to be.
pub fn damage(text: &str) -> Vec<Damage> {
    let layout = Layout::of(text);
    let mut found: Vec<Damage> = layout
        .orphans
        .iter()
        .map(|&(i, is_begin)| Damage {
            line: i + 1,
            kind: if is_begin {
                DamageKind::BeginWithoutEnd
            } else {
                DamageKind::EndWithoutBegin
            },
        })
        .chain(layout.blocks.iter().skip(1).map(|&(b, _)| Damage {
            line: b + 1,
            kind: DamageKind::ExtraBlock,
        }))
        .chain(layout.lines.iter().enumerate().filter_map(|(i, l)| {
            let c = &text[l.start..l.end];
            (c != BEGIN && c != END && (c.contains(BEGIN_TEXT) || c.contains(END_TEXT))).then_some(
                Damage {
                    line: i + 1,
                    kind: DamageKind::NotAWholeLine,
                },
            )
        }))
        .collect();
    found.sort_by_key(|d| d.line);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(hosts: &[&str]) -> Vec<(IpAddr, String)> {
        hosts
            .iter()
            .map(|h| ("169.254.254.254".parse().unwrap(), h.to_string()))
            .collect()
    }

    #[test]
    fn table() {
        let cases = [
            "",
            "127.0.0.1\tlocalhost\n",
            "127.0.0.1 localhost\n# comment\n::1\tip6-localhost ip6-loopback\n",
            "127.0.0.1 localhost",                    // no trailing newline
            "127.0.0.1 localhost\r\n10.0.0.1\tx\r\n", // CRLF
            "127.0.0.1 localhost\r\n10.0.0.1\tx",     // CRLF, no trailing newline
            "\t# indented comment\t\n\n\n",
        ];
        for original in cases {
            let one = render(original, &e(&["registry.home"]));
            assert!(one.contains("169.254.254.254\tregistry.home"), "{one:?}");
            assert!(
                one.starts_with(original) || !original.ends_with('\n'),
                "{original:?} -> {one:?}"
            );
            // Idempotent.
            assert_eq!(render(&one, &e(&["registry.home"])), one);
            // Changing the names replaces the block; removed names go.
            let two = render(&one, &e(&["a.home", "b.home"]));
            assert!(
                !two.contains("registry.home") && two.contains("a.home") && two.contains("b.home")
            );
            assert_eq!(two.matches(BEGIN).count(), 1);
            // Removing gives back the original, byte for byte.
            assert_eq!(remove_block(&two), original, "from {two:?}");
            assert_eq!(render(&two, &[]), original);
            if original.contains("\r\n") {
                assert!(
                    !two.replace("\r\n", "").contains('\n'),
                    "mixed line endings in {two:?}"
                );
            }
        }
    }

    #[test]
    fn block_in_the_middle_keeps_both_sides() {
        let text = format!("a\n{BEGIN}\n1.2.3.4\told\n{END}\nb\n");
        let out = render(&text, &e(&["new.home"]));
        assert_eq!(
            out,
            format!("a\n{BEGIN}\n169.254.254.254\tnew.home\n{END}\nb\n")
        );
        assert_eq!(remove_block(&out), "a\nb\n");
    }

    /// An operator commented the block out by putting `#` before each line: those lines are the
    /// operator's now, and registryd keeps one block of its own after them, however often it applies.
    #[test]
    fn a_commented_out_block_is_the_users_and_applies_do_not_pile_up() {
        let x = format!("127.0.0.1\tlocalhost\n# {BEGIN}\n# 169.254.254.254\told\n# {END}\n");
        let once = render(&x, &e(&["registry.home"]));
        let twice = render(&once, &e(&["registry.home"]));
        assert_eq!(twice, once);
        assert_eq!(
            once,
            format!("{x}{BEGIN}\n169.254.254.254\tregistry.home\n{END}\n")
        );
        assert_eq!(remove_block(&once), x);
    }

    /// A `BEGIN` with no `END` after it (a hand edit, another tool's truncated write): the lines
    /// after it are the user's, and no apply may take them into a block.
    #[test]
    fn an_orphan_begin_never_swallows_the_users_lines() {
        let x = format!("127.0.0.1\tlocalhost\n{BEGIN}\n10.1.2.3\tmine.home\n");
        let once = render(&x, &e(&["registry.home"]));
        assert!(once.starts_with(&x), "{once:?}");
        let twice = render(&once, &e(&["registry.home"]));
        assert_eq!(twice, once);
        let renamed = render(&twice, &e(&["other.home"]));
        assert!(renamed.contains("10.1.2.3\tmine.home\n"), "{renamed:?}");
        assert_eq!(remove_block(&renamed), x);
        // An END with no BEGIN before it is the user's too.
        let y = format!("{END}\n10.1.2.3\tmine.home\n");
        assert_eq!(remove_block(&render(&y, &e(&["registry.home"]))), y);
    }

    /// Markers count only as whole lines: text around one makes the line the user's.
    #[test]
    fn marker_text_inside_a_line_is_the_users() {
        for x in [
            format!("a\n  {BEGIN}\n1.1.1.1\tx\n{END}  \n"),
            format!("a\n{BEGIN} # old\nb\n{END}\n"),
            format!("a {BEGIN}\nb\n{END}\n"),
        ] {
            let once = render(&x, &e(&["registry.home"]));
            assert!(once.starts_with(&x), "{x:?} -> {once:?}");
            assert_eq!(render(&once, &e(&["registry.home"])), once);
            assert_eq!(remove_block(&once), x);
        }
    }

    /// What the old editor left after three starts with a commented-out block above: one block
    /// again, and the commented lines as they were.
    #[test]
    fn blocks_piled_up_by_earlier_applies_become_one() {
        let commented =
            format!("127.0.0.1\tlocalhost\n# {BEGIN}\n# 169.254.254.254\tregistry.home\n# {END}\n");
        let block = format!("{BEGIN}\n169.254.254.254\tregistry.home\n{END}\n");
        let piled = format!("{commented}{block}{block}{block}");
        assert_eq!(
            render(&piled, &e(&["registry.home"])),
            format!("{commented}{block}")
        );
        assert_eq!(remove_block(&piled), commented);
    }

    /// Taken out, a block between an orphan BEGIN and an orphan END would leave those two as a
    /// block around the user's lines, for the next apply to empty: it stays, without entries.
    #[test]
    fn a_block_between_orphan_markers_keeps_them_apart() {
        let x = format!("{BEGIN}\nmine\n{BEGIN}\n1.1.1.1\told\n{END}\nalso mine\n{END}\n");
        let removed = remove_block(&x);
        assert_eq!(
            removed,
            format!("{BEGIN}\nmine\n{BEGIN}\n{END}\nalso mine\n{END}\n")
        );
        let applied = render(&removed, &e(&["registry.home"]));
        assert_eq!(
            applied,
            format!(
                "{BEGIN}\nmine\n{BEGIN}\n169.254.254.254\tregistry.home\n{END}\nalso mine\n{END}\n"
            )
        );
        assert_eq!(remove_block(&applied), removed);
    }

    /// The fuzz target hosts' crash-7eb80e2f: a block between orphan BEGINs (none kept apart by
    /// it) goes with a remove, and the next apply appends its own at the end, where applying
    /// without the remove refills it in place. Both keep every line of the user's.
    #[test]
    fn remove_then_apply_appends_where_apply_refills() {
        let x = format!("{BEGIN}\r\n{BEGIN}\n{BEGIN}\n{END}\n{BEGIN}\n");
        let n = e(&["registry.home"]);
        let removed = remove_block(&x);
        assert_eq!(removed, format!("{BEGIN}\r\n{BEGIN}\n{BEGIN}\n"));
        let entry = "169.254.254.254\tregistry.home";
        assert_eq!(
            render(&removed, &n),
            format!("{removed}{BEGIN}\r\n{entry}\r\n{END}\r\n")
        );
        assert_eq!(
            render(&x, &n),
            format!("{BEGIN}\r\n{BEGIN}\n{BEGIN}\n{entry}\n{END}\n{BEGIN}\n")
        );
    }

    #[test]
    fn damage_names_each_leftover_line() {
        let x = format!(
            "a\r\n# {BEGIN}\r\n{END}\r\n{BEGIN}\r\nb\r\n{BEGIN}\r\n1.1.1.1\tx\r\n{END}\r\n"
        );
        let d = damage(&x);
        let at = |line, kind| Damage { line, kind };
        assert_eq!(
            d,
            vec![
                at(2, DamageKind::NotAWholeLine),
                at(3, DamageKind::EndWithoutBegin),
                at(4, DamageKind::BeginWithoutEnd),
            ]
        );
        assert_eq!(d[1].to_string(), "line 3: END marker without its BEGIN");
        // Applying leaves the damage as it was and adds none.
        assert_eq!(damage(&render(&x, &e(&["registry.home"]))), d);
        assert!(damage(&render("a\n", &e(&["registry.home"]))).is_empty());
        let sandwich = format!("{BEGIN}\n{BEGIN}\n{END}\n{BEGIN}\n1.1.1.1\tx\n{END}\n{END}\n");
        assert_eq!(
            damage(&sandwich),
            vec![
                at(1, DamageKind::BeginWithoutEnd),
                at(4, DamageKind::ExtraBlock),
                at(7, DamageKind::EndWithoutBegin),
            ]
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Line contents that matter to the block editor, and some that do not.
        fn line_content() -> impl Strategy<Value = String> {
            prop_oneof![
                3 => Just(BEGIN.to_string()),
                3 => Just(END.to_string()),
                1 => Just(format!("# {BEGIN}")),
                1 => Just(format!("#{END}")),
                1 => Just(format!("x {BEGIN}")),
                1 => Just(format!("{END} y")),
                1 => Just(format!("{BEGIN}\r")),
                2 => Just("169.254.254.254\tregistry.home".to_string()),
                2 => Just("127.0.0.1\tlocalhost".to_string()),
                1 => Just(String::new()),
                1 => Just("\r".to_string()),
                2 => "[ -~\t]{0,12}",
            ]
        }

        /// A text made of those lines, each ended by `\n`, `\r\n` or nothing (which runs it into the
        /// next line: markers mid-line, a missing final newline).
        fn text() -> impl Strategy<Value = String> {
            prop::collection::vec(
                (
                    line_content(),
                    prop_oneof![4 => Just("\n"), 2 => Just("\r\n"), 1 => Just("")],
                ),
                0..14,
            )
            .prop_map(|ls| ls.into_iter().map(|(c, t)| c + t).collect())
        }

        fn names() -> impl Strategy<Value = Vec<(IpAddr, String)>> {
            prop::collection::vec(
                prop_oneof![Just("registry.home"), Just("a.home"), Just("b.example.net")],
                1..3,
            )
            .prop_map(|h| e(&h))
        }

        /// The whole-line marker a line holds (its content without `\n` and one `\r`), if any.
        fn marker(line: &str) -> Option<&'static str> {
            let c = line.strip_suffix('\n').unwrap_or(line);
            let c = c.strip_suffix('\r').unwrap_or(c);
            [BEGIN, END].into_iter().find(|m| *m == c)
        }

        /// The contents of the lines that are the user's: every line outside a `BEGIN` line and the
        /// next `END` line with no `BEGIN` line between them. Written apart from the code it checks.
        fn users_lines(text: &str) -> Vec<String> {
            let lines: Vec<&str> = text.split_inclusive('\n').collect();
            let mut ours = vec![false; lines.len()];
            let mut open = None;
            for (i, l) in lines.iter().enumerate() {
                match marker(l) {
                    Some(m) if m == BEGIN => open = Some(i),
                    Some(_) => {
                        if let Some(b) = open.take() {
                            ours[b..=i].iter_mut().for_each(|o| *o = true);
                        }
                    }
                    None => {}
                }
            }
            lines
                .iter()
                .zip(ours)
                .filter(|(_, o)| !o)
                .map(|(l, _)| content(l))
                .collect()
        }

        /// A line without its `\n` and the `\r`s before it, to compare lines by. Line endings are
        /// not what this checks (`remove_undoes_apply` checks every byte): registryd adds one
        /// before a block it appends to an unended last line, and takes it away with the block.
        fn content(l: &str) -> String {
            l.strip_suffix('\n')
                .unwrap_or(l)
                .trim_end_matches('\r')
                .to_string()
        }

        fn is_subsequence(small: &[String], big: &[String]) -> bool {
            let mut big = big.iter();
            small.iter().all(|s| big.any(|b| b == s))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(20000))]

            /// The fuzz invariant: removing what apply added gives back the text it started from.
            #[test]
            fn remove_undoes_apply(x in text(), n in names()) {
                let applied = render(&x, &n);
                prop_assert_eq!(remove_block(&applied), remove_block(&x));
                if users_lines(&x).len() == x.split_inclusive('\n').count() {
                    // No block in x: byte for byte.
                    prop_assert_eq!(remove_block(&x), x.clone());
                    prop_assert_eq!(remove_block(&applied), x);
                }
            }

            /// Applying twice is applying once; a new set of names replaces the old one.
            #[test]
            fn apply_is_idempotent(x in text(), n in names(), m in names()) {
                let once = render(&x, &n);
                prop_assert_eq!(render(&once, &n), once.clone());
                prop_assert_eq!(render(&once, &m), render(&x, &m));
                // Every name is in the file, on a line of its own.
                for (ip, h) in &n {
                    let line = format!("{ip}\t{h}");
                    prop_assert!(once.split_inclusive('\n').any(|l| {
                        l.trim_end_matches(['\n', '\r']) == line
                    }), "{} missing in {:?}", line, once);
                }
            }

            /// No sequence of applies and removes loses a line of the user's.
            #[test]
            fn the_users_lines_survive(
                x in text(),
                ops in prop::collection::vec(prop::option::of(names()), 1..6),
            ) {
                let want = users_lines(&x);
                let mut t = x.clone();
                for op in ops {
                    t = match op {
                        Some(n) => render(&t, &n),
                        None => remove_block(&t),
                    };
                    let have: Vec<String> = t.split_inclusive('\n').map(content).collect();
                    prop_assert!(is_subsequence(&want, &have), "lost a line of {:?} in {:?}", x, t);
                }
            }
        }
    }
}
