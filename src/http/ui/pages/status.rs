//! `GET /ui/upstreams` and `GET /ui/node`: what the status board holds of the pull-through
//! cache's upstreams, this node and the cluster's heartbeats. The board is written by the parts
//! doing the work; these pages render whatever is there and say "not reported yet" for what is
//! not. They read no storage, so they answer while the storage is down, when they matter most.

use askama::Template;
use http::{Response, StatusCode};

use super::super::ctx::Ctx;
use super::super::view::{self, Chrome, When};
use crate::http::Body;
use crate::status::{GcReport, Heartbeat, NodeReport, STALE_AFTER_PERIODS, UpstreamReport};

struct UpstreamRow {
    r: UpstreamReport,
    state: &'static str,
    state_class: &'static str,
    last_check: Option<When>,
    cached_bytes: String,
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
                cached_bytes: view::size(r.cached_bytes),
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
    /// `alive` or `stale`.
    state: &'static str,
    seen: Option<When>,
    cert: Option<When>,
    this: bool,
}

struct Gc {
    finished: Option<When>,
    freed: String,
    r: GcReport,
}

#[derive(Template)]
#[template(path = "node.html")]
struct NodePage {
    chrome: Chrome,
    reported: bool,
    n: NodeReport,
    cert_expiry: Option<When>,
    free: Option<String>,
    last_check: Option<When>,
    gc: Option<Gc>,
    cluster: Vec<ClusterRow>,
    stale_after: String,
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
            // Judged by the period the node beats at, which its beat carries.
            state: b.state(now),
            seen: When::maybe(b.seen, now),
            cert: When::maybe(b.certificate_not_after, now),
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
        free: n.storage.free_bytes.map(view::size),
        last_check: When::maybe(n.storage.last_check, now),
        gc: n.last_gc.clone().map(|r| Gc {
            finished: When::maybe(r.finished, now),
            freed: view::size(r.bytes_freed),
            r,
        }),
        cluster,
        stale_after: format!("{STALE_AFTER_PERIODS} of its heartbeat periods"),
        n,
    };
    view::html(StatusCode::OK, &page)
}
