//! Request bodies held to progress. A body must keep arriving: silence for the stall time fails
//! it, and so does a trickle. Measuring only silence let a client send one byte every few seconds
//! and hold an upload slot (and its file and task) for as long as it liked; four such clients
//! made every other upload get 429. So the body must also average a minimum rate over every span
//! of the stall time spent waiting for it (the first span is its grace: a client may start slowly).
//!
//! Only time spent waiting for the client counts: while the handler writes what arrived to
//! storage (a slow shared mount) the clock stands still, so a slow disk is never blamed on the
//! client.
//!
//! Handlers take a body in one of two forms: streamed to storage under the blob size limit
//! ([`upload_body`]), or read into memory under a byte limit ([`read_limited`], manifests).

use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::StatusCode;
use http_body_util::BodyStream;
use hyper::body::Incoming;

use super::app::Req;
use super::error::{ApiError, Code};
use super::settings::Settings;

/// Turns a request body into a stream of byte chunks, the form storage takes. A body that stalls
/// for `stall` (no byte arrives) ends with a `TimedOut` error, so a client that stops sending does
/// not hold an upload, its file and its task forever.
pub fn body_stream(
    body: Incoming,
    stall: Duration,
) -> impl Stream<Item = io::Result<Bytes>> + Unpin + Send {
    paced_body_stream(body, stall, 0)
}

/// [`body_stream`], also failing a body that averages under `min_rate` bytes/s over any `stall`
/// of waiting for it (see the module comment): a trickle holds an upload as surely as a stall.
fn paced_body_stream(
    body: Incoming,
    stall: Duration,
    min_rate: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Unpin + Send {
    let frames = Box::pin(BodyStream::new(body).filter_map(|frame| async move {
        match frame {
            Ok(f) => f.into_data().ok().map(Ok),
            Err(e) => Some(Err(io::Error::other(e))),
        }
    }));
    held_to_progress(frames, Progress { stall, min_rate })
}

/// The body of `req` as a stream, with the body timeout and minimum rate in force and the blob
/// size limit.
pub fn upload_body(
    req: Req,
    settings: &Settings,
    max_blob_bytes: u64,
    already: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Unpin + Send {
    let mut seen = already;
    let body = paced_body_stream(req.body, req.body_timeout, settings.body_min_rate);
    Box::pin(body.map(move |chunk| {
        let chunk = chunk?;
        seen = seen.saturating_add(chunk.len() as u64);
        if max_blob_bytes > 0 && seen > max_blob_bytes {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("blob is larger than {max_blob_bytes} bytes (limits.max_blob_bytes)"),
            ));
        }
        Ok(chunk)
    }))
}

/// Reads a body into memory, refusing more than `limit` bytes.
pub async fn read_limited(
    body: Incoming,
    limit: u64,
    stall: Duration,
) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    let mut s = body_stream(body, stall);
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                Code::BlobUploadInvalid,
                format!("request body: {e}"),
            )
        })?;
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large(limit));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// 413 for a manifest over `limits.max_manifest_bytes`.
pub fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        Code::SizeInvalid,
        format!(
            "manifest is larger than the {limit} bytes this registry accepts (limits.max_manifest_bytes)"
        ),
    )
}

/// What a body must keep up: no silence of `stall`, and at least `min_rate` bytes per second over
/// each `stall` of waiting (0: no rate, silence alone fails it).
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub stall: Duration,
    pub min_rate: u64,
}

impl Progress {
    /// Bytes that must arrive in one span of `stall` of waiting (at least one: silence fails).
    fn needed_per_span(&self) -> u64 {
        let need = (self.min_rate as f64 * self.stall.as_secs_f64()).ceil();
        // A float past u64::MAX converts to u64::MAX: no wrap.
        (need as u64).max(1)
    }
}

struct State<S> {
    frames: S,
    progress: Progress,
    /// Waiting time and bytes in the current span.
    waited: Duration,
    bytes: u64,
    /// Waiting time since the last byte arrived.
    silent: Duration,
    done: bool,
}

/// `frames` (the body's data, chunk by chunk), failing with `TimedOut` when the body stalls or
/// arrives slower than `progress` allows.
pub fn held_to_progress<S>(
    frames: S,
    progress: Progress,
) -> impl Stream<Item = io::Result<Bytes>> + Unpin + Send
where
    S: Stream<Item = io::Result<Bytes>> + Unpin + Send,
{
    let state = State {
        frames,
        progress,
        waited: Duration::ZERO,
        bytes: 0,
        silent: Duration::ZERO,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let stall = st.progress.stall;
            let left = stall
                .saturating_sub(st.waited)
                .min(stall.saturating_sub(st.silent));
            let started = Instant::now();
            let next = tokio::time::timeout(left, st.frames.next()).await;
            let waited = started.elapsed();
            st.waited += waited;
            st.silent += waited;
            let item = match next {
                Ok(Some(Ok(chunk))) => {
                    st.bytes = st.bytes.saturating_add(chunk.len() as u64);
                    st.silent = Duration::ZERO;
                    Some(Ok(chunk))
                }
                Ok(Some(Err(e))) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
                Ok(None) => return None,
                Err(_) => None,
            };
            // Silence fails at once, whatever the span; the rate is judged at each span's end.
            if st.silent >= stall || st.waited >= stall {
                if let Some(e) = st.span_failed() {
                    st.done = true;
                    return Some((Err(e), st));
                }
                st.waited = Duration::ZERO;
                st.bytes = 0;
            }
            if let Some(item) = item {
                return Some((item, st));
            }
        }
    }))
}

impl<S> State<S> {
    /// At the end of a span: the error if too little arrived in it.
    fn span_failed(&self) -> Option<io::Error> {
        let secs = self.progress.stall.as_secs_f64();
        if self.silent >= self.progress.stall {
            return Some(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no data for {} s (limits.body_read_timeout_secs)",
                    self.progress.stall.as_secs()
                ),
            ));
        }
        if self.progress.min_rate > 0 && self.bytes < self.progress.needed_per_span() {
            return Some(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the body arrived at {:.0} bytes/s over {secs:.0} s, under the {} bytes/s \
                     this registry needs (limits.body_min_bytes_per_sec)",
                    self.bytes as f64 / secs.max(f64::MIN_POSITIVE),
                    self.progress.min_rate
                ),
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that sends `piece` bytes every `every`, `count` times.
    fn trickle(
        piece: usize,
        every: Duration,
        count: usize,
    ) -> impl Stream<Item = io::Result<Bytes>> + Unpin + Send {
        Box::pin(futures_util::stream::unfold(0, move |n| async move {
            if n == count {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Ok(Bytes::from(vec![b'x'; piece])), n + 1))
        }))
    }

    async fn run(
        s: impl Stream<Item = io::Result<Bytes>> + Unpin,
    ) -> (usize, Option<io::Error>, Duration) {
        let started = Instant::now();
        let mut s = s;
        let mut got = 0;
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => got += b.len(),
                Err(e) => return (got, Some(e), started.elapsed()),
            }
        }
        (got, None, started.elapsed())
    }

    #[tokio::test]
    async fn a_trickle_under_the_rate_is_cut_off_though_it_never_stalls() {
        // One byte every 50 ms never stalls for 300 ms, the per-read rule that let it through.
        let p = Progress {
            stall: Duration::from_millis(300),
            min_rate: 1000,
        };
        let (got, err, took) = run(held_to_progress(
            trickle(1, Duration::from_millis(50), 1000),
            p,
        ))
        .await;
        let err = err.expect("cut off");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("body_min_bytes_per_sec"), "{err}");
        assert!(got < 10, "{got}");
        assert!(took < Duration::from_millis(700), "{took:?}");

        // With no minimum rate the same trickle runs to its end (the old rule alone).
        let p = Progress { min_rate: 0, ..p };
        let (got, err, _) = run(held_to_progress(
            trickle(1, Duration::from_millis(5), 40),
            p,
        ))
        .await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got, 40);
    }

    #[tokio::test]
    async fn a_body_at_the_rate_passes_and_silence_still_fails() {
        let p = Progress {
            stall: Duration::from_millis(200),
            min_rate: 1000,
        };
        // 100 bytes every 20 ms is 5000 bytes/s.
        let (got, err, _) = run(held_to_progress(
            trickle(100, Duration::from_millis(20), 30),
            p,
        ))
        .await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got, 3000);

        let silent = trickle(1, Duration::from_secs(10), 1);
        let (_, err, took) = run(held_to_progress(silent, p)).await;
        let err = err.expect("stalled");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("no data"), "{err}");
        assert!(took < Duration::from_millis(500), "{took:?}");
    }

    #[tokio::test]
    async fn silence_fails_after_the_stall_time_not_at_the_end_of_a_span() {
        let p = Progress {
            stall: Duration::from_millis(300),
            min_rate: 1000,
        };
        // Plenty at 200 ms, then nothing: cut 300 ms later (at 500 ms), not when the second span
        // ends (at 600 ms).
        let body = Box::pin(
            trickle(10_000, Duration::from_millis(200), 1).chain(trickle(
                1,
                Duration::from_secs(10),
                1,
            )),
        );
        let (got, err, took) = run(held_to_progress(body, p)).await;
        assert_eq!(got, 10_000);
        assert!(err.expect("stalled").to_string().contains("no data"));
        assert!(took < Duration::from_millis(580), "{took:?}");
    }

    #[tokio::test]
    async fn time_the_reader_spends_elsewhere_does_not_count() {
        // The reader (storage) takes 100 ms per chunk; the client sends at once. Waiting time is
        // near zero, so however slow the reader, the body is not cut off.
        let p = Progress {
            stall: Duration::from_millis(150),
            min_rate: 1_000_000,
        };
        let mut s = held_to_progress(trickle(10_000, Duration::ZERO, 5), p);
        let mut got = 0;
        while let Some(item) = s.next().await {
            got += item.expect("no timeout").len();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(got, 50_000);
    }
}
