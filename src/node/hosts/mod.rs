//! The `/etc/hosts` block: one line per configured hostname pointing at the registry address, fenced
//! by marker lines. Every other byte of the file is preserved (comments, tabs, CRLF, a missing
//! final newline), and removing the block gives back exactly the file it was added to.
//!
//! The block is a line that is exactly [`BEGIN`] and the next line that is exactly [`END`], with no
//! `BEGIN` line between them. Everything else is the user's, and stays: a `BEGIN` whose `END` is
//! missing (a hand edit, another tool's truncated write), an `END` without its `BEGIN`, and marker
//! text that is not a whole line (a block an operator commented out with `#`). Taking an orphan
//! `BEGIN` and a later `END` for a block would delete the user's lines between them; [`damage`]
//! lists such leftovers instead, for the log, and registryd keeps its entries in a block of its own.
//!
//! The file is replaced atomically (temp file, fsync, rename, directory fsync) with its mode and
//! owner kept. Where it is a bind mount (containers, some systemd sandboxes) rename fails with
//! `EBUSY`, and the content is rewritten in place instead. Another program's edit that lands while
//! registryd rewrites the file is detected (the old inode changed after it was read) and merged.

mod block;
mod file;

pub use self::block::{BEGIN, Damage, DamageKind, END, damage, remove_block, render};
pub use self::file::{Written, apply, inspect, remove};
