//! What the web UI's pages cost in storage calls, beside the catalog's first page: run by
//! `bench/ui.sh` on a storage root it generated. Not a test; it prints times, asserts none.
//!
//! `summary_bench ROOT RUNS REPO`: opens the root as a daemon does (fresh caches), then times the
//! catalog's first 100 names, the repositories page's facts (those names and their summaries),
//! a repository page's facts (REPO's tags and untagged manifests), and a census: the first call
//! of each (empty caches), then the median of RUNS more. Prints one JSON object of milliseconds.

use std::time::{Duration, Instant};

use registryd::registry::RepoName;
use registryd::storage::Storage;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

async fn catalog(s: &Storage) -> Result<Vec<RepoName>, String> {
    let (names, _) = s
        .list_repositories(None, Some(100))
        .await
        .map_err(|e| e.to_string())?;
    Ok(names.iter().filter_map(|n| n.parse().ok()).collect())
}

async fn repositories_page(s: &Storage) -> Result<usize, String> {
    let names = catalog(s).await?;
    let rows = s
        .repository_summaries(&names)
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows.iter().filter(|r| r.is_ok()).count())
}

async fn repository_page(s: &Storage, repo: &RepoName) -> Result<usize, String> {
    let tags = s.tag_details(repo).await.map_err(|e| e.to_string())?;
    let untagged = s
        .untagged_manifests(repo)
        .await
        .map_err(|e| e.to_string())?;
    Ok(tags.len() + untagged.len())
}

/// Times `f` once cold, then `runs` times; (cold, median of the rest).
macro_rules! timed {
    ($runs:expr, $f:expr) => {{
        let t = Instant::now();
        $f.await?;
        let cold = ms(t.elapsed());
        let mut warm = Vec::new();
        for _ in 0..$runs {
            let t = Instant::now();
            $f.await?;
            warm.push(ms(t.elapsed()));
        }
        (cold, median(warm))
    }};
}

async fn run(root: &str, runs: usize, repo: &str) -> Result<String, String> {
    let repo: RepoName = repo.parse().map_err(|e| format!("{e}"))?;
    let open = || Storage::open(root).map_err(|e| e.to_string());
    // First calls on empty caches (the kernel's are warm: the tree was just written). The first
    // summaries start a census on its own task; it is waited out before anything else is timed.
    let cold = open()?;
    let t = Instant::now();
    repository_page(&cold, &repo).await?;
    let repo_cold = ms(t.elapsed());
    let t = Instant::now();
    repositories_page(&cold).await?;
    let page_cold = ms(t.elapsed());
    cold.measure_unique_sizes()
        .await
        .map_err(|e| e.to_string())?;
    drop(cold);

    let s = open()?;
    let (cat_cold, cat) = timed!(runs, catalog(&s));
    let t = Instant::now();
    let census = s.measure_unique_sizes().await.map_err(|e| e.to_string())?;
    let census_ms = ms(t.elapsed());
    let (_, page) = timed!(runs, repositories_page(&s));
    let (_, repo_warm) = timed!(runs, repository_page(&s, &repo));
    Ok(format!(
        concat!(
            "{{\"catalog_cold\":{:.3},\"catalog\":{:.3},\"summaries_cold\":{:.3},",
            "\"summaries\":{:.3},\"repo_cold\":{:.3},\"repo\":{:.3},",
            "\"census\":{:.1},\"census_repositories\":{},\"census_blobs\":{}}}"
        ),
        cat_cold,
        cat,
        page_cold,
        page,
        repo_cold,
        repo_warm,
        census_ms,
        census.repositories,
        census.blobs
    ))
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(root), Some(runs), Some(repo)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: summary_bench ROOT RUNS REPO");
        return std::process::ExitCode::from(2);
    };
    let Ok(runs) = runs.parse::<usize>() else {
        eprintln!("RUNS must be a number");
        return std::process::ExitCode::from(2);
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(root, runs, repo)) {
        Ok(json) => {
            println!("{json}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("summary_bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
