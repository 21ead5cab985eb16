//! A watch on the HTTP/2 frames a client sends, for the floods hyper and h2 let through: h2 bounds
//! what they cost in memory (one pending PING answer, one pending SETTINGS acknowledgement; when
//! the client does not read them, h2 stops reading) but never closes a connection that sends
//! PINGs, SETTINGS, RST_STREAMs after its streams were accepted (the serial form of rapid reset,
//! CVE-2023-44487, which h2's count of streams reset before they were accepted misses), requests
//! whose header lists are over the limit (h2 answers each with 431 and counts none of them),
//! PRIORITY frames or frames of unknown types as fast as it can while it reads the answers: each
//! costs the server a little CPU, and the attacker nothing but bandwidth.
//!
//! [`FrameGuard`] reads the plaintext a connection receives (it sees the bytes before hyper does,
//! and parses no more than the 9-byte frame headers), and charges those frames to a token bucket:
//! a burst of [`BURST`] and [`PER_SEC`] more every second. Requests, DATA and WINDOW_UPDATE
//! frames cost nothing; a CONTINUATION frame, which only a header list over 16 KiB needs (h2
//! itself ends an endless one: GOAWAY ENHANCE_YOUR_CALM past the frames a full list needs), costs
//! one. A connection that empties the bucket is cut at once. HTTP/1.1 connections are let through
//! untouched (no preface).

use std::time::Instant;

/// Frames a connection may send at once before the rate below applies. Real clients send a
/// handful: SETTINGS at the start, a PING now and then to check the connection (gRPC's and Go's
/// health checks: one every few seconds at the most), an RST_STREAM per request they give up
/// (a cancelled pull: a few), a CONTINUATION frame for a header list over 16 KiB (none do: a
/// large Bearer token is 2 to 12 KiB). 500 is two orders of magnitude above that, and well below
/// what a flood sends in a second (tens of thousands).
pub const BURST: f64 = 500.0;
/// Frames per second a connection may keep sending after the burst.
pub const PER_SEC: f64 = 50.0;

/// What starts every HTTP/2 connection (RFC 9113, section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;

#[derive(Debug)]
enum State {
    /// Matching the connection preface: this many bytes of it seen.
    Preface(usize),
    /// Reading a frame header: these bytes of it so far.
    Head([u8; FRAME_HEADER], usize),
    /// Skipping a frame's payload: this many bytes left.
    Payload(u64),
    /// Not HTTP/2 (HTTP/1.1): nothing to watch.
    Off,
}

/// The frame watch of one connection (see the module's doc).
#[derive(Debug)]
pub struct FrameGuard {
    state: State,
    tokens: f64,
    refilled: Instant,
}

impl Default for FrameGuard {
    fn default() -> FrameGuard {
        FrameGuard::new(Instant::now())
    }
}

impl FrameGuard {
    pub fn new(now: Instant) -> FrameGuard {
        FrameGuard {
            state: State::Preface(0),
            tokens: BURST,
            refilled: now,
        }
    }

    /// Watches the next bytes the client sent. Err: the connection sent more of the frames above
    /// than its budget allows, and should be closed; the text says which kind tipped it.
    pub fn observe(&mut self, mut bytes: &[u8], now: Instant) -> Result<(), &'static str> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Off => return Ok(()),
                State::Preface(seen) => {
                    let want = PREFACE.get(*seen..).unwrap_or_default();
                    let n = want.len().min(bytes.len());
                    if want.get(..n) != bytes.get(..n) {
                        self.state = State::Off;
                        return Ok(());
                    }
                    *seen += n;
                    bytes = bytes.get(n..).unwrap_or_default();
                    if *seen == PREFACE.len() {
                        self.state = State::Head([0; FRAME_HEADER], 0);
                    }
                }
                State::Head(head, have) => {
                    let n = (FRAME_HEADER - *have).min(bytes.len());
                    for (slot, b) in head.iter_mut().skip(*have).zip(bytes.iter().take(n)) {
                        *slot = *b;
                    }
                    *have += n;
                    bytes = bytes.get(n..).unwrap_or_default();
                    if *have == FRAME_HEADER {
                        let [l0, l1, l2, kind, flags, ..] = *head;
                        let len = u64::from(u32::from_be_bytes([0, l0, l1, l2]));
                        let charged = costs(kind, flags, len);
                        self.state = State::Payload(len);
                        if let Some((what, weight)) = charged {
                            self.charge(now, what, weight)?;
                        }
                    }
                }
                State::Payload(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    bytes = bytes.get(n as usize..).unwrap_or_default();
                    if *left == 0 {
                        self.state = State::Head([0; FRAME_HEADER], 0);
                    }
                }
            }
        }
        // A frame with no payload ends with its header.
        if matches!(self.state, State::Payload(0)) {
            self.state = State::Head([0; FRAME_HEADER], 0);
        }
        Ok(())
    }

    fn charge(
        &mut self,
        now: Instant,
        what: &'static str,
        weight: f64,
    ) -> Result<(), &'static str> {
        let secs = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + secs * PER_SEC).min(BURST) - weight;
        if self.tokens < 0.0 {
            return Err(what);
        }
        Ok(())
    }
}

/// The frames that are charged, by what they are called in the log, and what each costs.
fn costs(kind: u8, flags: u8, len: u64) -> Option<(&'static str, f64)> {
    const END_STREAM: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    const ACK: u8 = 0x1;
    let what = match kind {
        // DATA: only empty ones that do not end the stream (no progress).
        0x0 if len == 0 && flags & END_STREAM == 0 => "a flood of empty DATA frames",
        // A header block that needs CONTINUATION (over 16 KiB): decoding it is the costly part of
        // a request, and one after another is what a header-list flood sends (2,000 small
        // headers took the server 0.75 of a core at one a frame); real clients send none.
        0x1 if flags & END_HEADERS == 0 => {
            return Some(("a flood of header blocks over 16 KiB", OVERSIZED_HEADERS));
        }
        0x0 | 0x1 | 0x5 | 0x8 => return None,
        0x2 => "a flood of PRIORITY frames",
        0x3 => "a flood of RST_STREAM frames (rapid reset)",
        0x4 if flags & ACK != 0 => return None,
        0x4 => "a flood of SETTINGS frames",
        0x6 => "a flood of PING frames",
        0x7 => "a flood of GOAWAY frames",
        0x9 => "a flood of CONTINUATION frames (header lists over the limit)",
        _ => "a flood of frames of unknown types",
    };
    Some((what, 1.0))
}

/// What a HEADERS frame that needs CONTINUATION frames costs (see [`costs`]).
const OVERSIZED_HEADERS: f64 = 10.0;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.extend([kind, flags, 0, 0, 0, 1]);
        f.extend(payload);
        f
    }

    #[test]
    fn a_ping_flood_is_cut_and_a_slow_one_is_not() {
        let t0 = Instant::now();
        let mut g = FrameGuard::new(t0);
        g.observe(PREFACE, t0).unwrap();
        g.observe(&frame(0x4, 0, &[]), t0).unwrap();
        let ping = frame(0x6, 0, &[0; 8]);
        // A PING every 20 ms for two minutes stays within the rate.
        for i in 0..6000u64 {
            let at = t0 + Duration::from_millis(20 * i);
            g.observe(&ping, at).unwrap();
        }
        let mut g = FrameGuard::new(t0);
        g.observe(PREFACE, t0).unwrap();
        let flood: Vec<u8> = (0..600).flat_map(|_| ping.clone()).collect();
        assert_eq!(g.observe(&flood, t0), Err("a flood of PING frames"));
    }

    #[test]
    fn frames_split_anywhere_are_parsed_alike() {
        let t0 = Instant::now();
        let mut bytes = PREFACE.to_vec();
        // Requests with bodies cost nothing however many; RST_STREAMs do.
        for _ in 0..1000 {
            bytes.extend(frame(0x1, 0x4, &[0x82; 20]));
            bytes.extend(frame(0x0, 0x1, &[7; 100]));
            bytes.extend(frame(0x8, 0, &[0, 0, 1, 0]));
        }
        let mut g = FrameGuard::new(t0);
        for chunk in bytes.chunks(7) {
            g.observe(chunk, t0).unwrap();
        }
        for _ in 0..(BURST as usize) {
            bytes.extend(frame(0x3, 0, &[0, 0, 0, 8]));
        }
        let mut g = FrameGuard::new(t0);
        let mut ended = Ok(());
        for chunk in bytes.chunks(5) {
            ended = ended.and(g.observe(chunk, t0));
        }
        assert_eq!(ended, Ok(()));
        assert!(g.observe(&frame(0x3, 0, &[0, 0, 0, 8]), t0).is_err());
    }

    #[test]
    fn header_blocks_over_16k_one_after_another_are_cut_sooner() {
        let t0 = Instant::now();
        let mut g = FrameGuard::new(t0);
        g.observe(PREFACE, t0).unwrap();
        // HEADERS without END_HEADERS, then its CONTINUATION: eleven tokens a request.
        let request = [frame(0x1, 0, &[0x82; 16]), frame(0x9, 0x4, &[0x82; 16])].concat();
        for _ in 0..(BURST as usize / 11) {
            g.observe(&request, t0).unwrap();
        }
        assert_eq!(
            g.observe(&request, t0),
            Err("a flood of header blocks over 16 KiB")
        );
    }

    #[test]
    fn http1_is_not_watched() {
        let t0 = Instant::now();
        let mut g = FrameGuard::new(t0);
        let ping = frame(0x6, 0, &[0; 8]);
        g.observe(b"GET /v2/ HTTP/1.1\r\n\r\n", t0).unwrap();
        for _ in 0..2000 {
            g.observe(&ping, t0).unwrap();
        }
    }
}
