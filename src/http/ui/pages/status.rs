//! `GET /ui/upstreams` and `GET /ui/node`: what the status board holds of the pull-through
//! cache's upstreams, this node and the cluster's heartbeats. The board is written by the parts
//! doing the work; these pages render whatever is there and say "not reported yet" for what is
//! not. They read no storage, so they answer while the storage is down, when they matter most.

use askama::Template;
use http::{Response, StatusCode};

use super::super::ctx::Ctx;
use super::super::view::{self, Chrome, Size, When};
use crate::http::Body;
use crate::status::{GcReport, Heartbeat, NodeReport, STALE_AFTER_PERIODS, UpstreamReport};

struct UpstreamRow {
    r: UpstreamReport,
    state: &'static str,
    state_class: &'static str,
    last_check: Option<When>,
    last_error_at: Option<When>,
    cached_bytes: Size,
    /// When the cached images and bytes were counted (`None`: not yet).
    totals_at: Option<When>,
}

#[derive(Template)]
#[template(path = "upstreams.html")]
struct UpstreamsPage {
    chrome: Chrome,
    rows: Vec<UpstreamRow>,
}

pub fn upstreams(ctx: &Ctx<'_>) -> Response<Body> {
    if !ctx.may_look() {
        return ctx.login_required();
    }
    let rows = ctx
        .app
        .status
        .upstreams()
        .into_iter()
        .map(|r| {
            let (state, state_class) = match r.reachable {
                Some(true) => ("reachable", "state-ok"),
                Some(false) => ("unreachable", "state-bad"),
                None => ("not asked yet", "muted"),
            };
            UpstreamRow {
                state,
                state_class,
                last_check: When::maybe(r.last_check, ctx.now),
                last_error_at: When::maybe(r.last_error_at, ctx.now),
                cached_bytes: match r.totals_at {
                    Some(_) => Size::of(r.cached_bytes),
                    None => Size::unknown("not counted yet"),
                },
                totals_at: When::maybe(r.totals_at, ctx.now),
                r,
            }
        })
        .collect();
    view::html(
        StatusCode::OK,
        &UpstreamsPage {
            chrome: ctx.chrome("upstreams"),
            rows,
        },
    )
}

struct ClusterRow {
    b: Heartbeat,
    /// `alive` or `stale`, as `Heartbeat::state` judges it.
    state: &'static str,
    seen: Option<When>,
    cert: Option<When>,
    /// Seconds between its beats.
    period: u64,
    this: bool,
}

struct Gc {
    finished: Option<When>,
    freed: Size,
    r: GcReport,
}

#[derive(Template)]
#[template(path = "node.html")]
struct NodePage {
    chrome: Chrome,
    reported: bool,
    n: NodeReport,
    cert_expiry: Option<When>,
    free: Option<Size>,
    last_check: Option<When>,
    gc: Option<Gc>,
    cluster: Vec<ClusterRow>,
    stale_after: u32,
}

pub fn node(ctx: &Ctx<'_>) -> Response<Body> {
    if !ctx.may_look() {
        return ctx.login_required();
    }
    let n = ctx.app.status.node();
    let now = ctx.now;
    let mut cluster: Vec<ClusterRow> = ctx
        .app
        .status
        .cluster()
        .into_iter()
        .map(|b| ClusterRow {
            state: b.state(now),
            seen: When::maybe(b.seen, now),
            cert: When::maybe(b.certificate_not_after, now),
            period: b.period().as_secs(),
            this: !n.name.is_empty() && b.node == n.name,
            b,
        })
        .collect();
    cluster.sort_by(|a, b| a.b.node.cmp(&b.b.node));
    let page = NodePage {
        chrome: ctx.chrome("node"),
        reported: !n.name.is_empty() || !n.storage.driver.is_empty(),
        cert_expiry: n
            .certificate
            .as_ref()
            .and_then(|c| When::maybe(c.not_after, now)),
        free: n.storage.free_bytes.map(Size::of),
        last_check: When::maybe(n.storage.last_check, now),
        gc: n.last_gc.clone().map(|r| Gc {
            finished: When::maybe(r.finished, now),
            freed: Size::of(r.bytes_freed),
            r,
        }),
        cluster,
        stale_after: STALE_AFTER_PERIODS,
        n,
    };
    view::html(StatusCode::OK, &page)
}
