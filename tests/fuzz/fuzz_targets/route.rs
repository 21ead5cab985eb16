//! The request-path router (`http::route`), fed any path.
//!
//! Invariant: no panic; a path that routes has the metrics kind of its route (`Routed::of`
//! computes the two apart, and the `route` label must name what was served); the repository name
//! of a route is the path's own text after `/v2/`; a digest in a route prints back to a digest
//! equal to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registryd::http::route::{Kind, Route, Routed};
use registryd::registry::Digest;

fn kind_of(route: &Route) -> Kind {
    match route {
        Route::Base => Kind::Base,
        Route::Catalog => Kind::Catalog,
        Route::Tags(_) => Kind::Tags,
        Route::Manifest(..) | Route::BadReference(..) => Kind::Manifest,
        Route::Blob(..) => Kind::Blob,
        Route::UploadStart(_) | Route::Upload(..) => Kind::Upload,
        Route::Referrers(..) => Kind::Referrers,
        Route::Healthz | Route::Readyz => Kind::Probe,
        Route::Token => Kind::Token,
    }
}

fuzz_target!(|data: &[u8]| {
    let path = String::from_utf8_lossy(data);
    let routed = Routed::of(&path, "/metrics");
    let Ok(route) = &routed.route else { return };
    assert_eq!(routed.kind, kind_of(route), "{path:?} routes to {route:?}");
    if let Some(name) = route.repository() {
        let rest = path.strip_prefix("/v2/").unwrap_or_default();
        assert!(
            rest.starts_with(&format!("{name}/")),
            "{path:?}: name {name} is not the path's"
        );
    }
    if let Some(d) = route.digest() {
        assert_eq!(d.to_string().parse::<Digest>().as_ref(), Ok(d));
    }
});
