//! Coherence of a GlusterFS storage mount, read from the FUSE client's `.meta` directory.
//!
//! With GlusterFS's default caches another node's mount sees stale data for about a second: a tag
//! renamed over reads as its old digest, a new blob reads as 0 bytes (ARCHITECTURE.md). Four volume
//! options and three mount options make it behave like a local filesystem. They cannot be fixed from
//! here, but they can be seen: every GlusterFS FUSE mount has a virtual `.meta` directory at its root
//! that shows the client's active translator graph (`graphs/active/volfile`), its FUSE settings
//! (`root/private`) and its command line (`cmdline`). A translator that is switched off is absent from
//! the graph, so the graph tells which caches are on.
//!
//! One more option is about failures, not caches: on a replica-3 volume, two nodes each cut off from
//! a different brick still have a majority each, and when both create the same new directory (first
//! pushes of one repository, one blob) each side's copy gets its own GFID: a GFID split-brain, EIO
//! on that path until someone resolves it by hand. `cluster.favorite-child-policy majority` lets
//! GlusterFS resolve it on its own, keeping the copy two bricks agree on. That is always the copy
//! holding what was acknowledged, because AFR acknowledges a write only on a majority of good bricks
//! (tests/system/gluster-cluster.sh, "network partition"). The graph shows the option when it was
//! set before the client mounted; set later, it applies at once but shows only after a remount.
//!
//! The same directory says which bricks this client is connected to right now
//! (`graphs/active/<volume>-client-N/private`, `connected = 0|1`; checked on GlusterFS 10.3). A node
//! whose client lost the majority of a replica set still has a mount that may answer (reads, even
//! writes that the volume later discards or refuses), so it is told unready ([`quorum`]) rather than
//! left to serve what the other nodes may not see.

use std::path::{Path, PathBuf};

use super::mount;

/// One coherence setting that is off, and the command that fixes it.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    pub what: String,
    pub fix: String,
    /// What goes wrong while the setting stays as it is.
    pub effect: &'static str,
}

const STALE: &str = "other nodes may read stale tags and blobs for about a second";
const SPLIT_BRAIN: &str = "after a network partition, a directory both sides created answers 503 \
     (GFID split-brain) until resolved by hand";

/// The mount holding `path` (its nearest existing ancestor), as (mount point, filesystem type).
pub fn mount_of(mountinfo: &str, path: &Path) -> Option<(PathBuf, String)> {
    let mut p = path;
    let real = loop {
        if let Ok(r) = std::fs::canonicalize(p) {
            break r;
        }
        p = p.parent()?;
    };
    let mut best: Option<(PathBuf, String)> = None;
    for (mp, fstype) in mount::mounts(mountinfo) {
        // Later lines are mounted on top of earlier ones: `>=` keeps the last of equal length.
        if real.starts_with(&mp)
            && best
                .as_ref()
                .is_none_or(|(b, _)| mp.as_os_str().len() >= b.as_os_str().len())
        {
            best = Some((mp, fstype.to_string()));
        }
    }
    best
}

/// The coherence problems of the GlusterFS mount at `mount_point`, from the texts of its `.meta`
/// files: the active client graph, the FUSE private state and the client's command line.
pub fn problems(volfile: &str, fuse_private: &str, cmdline: &str) -> Vec<Problem> {
    let option = |name: &str| {
        let prefix = format!("--{name}=");
        cmdline.split_whitespace().find_map(|a| {
            a.trim_matches('"')
                .strip_prefix(prefix.as_str())
                .map(str::to_string)
        })
    };
    let volume = option("volfile-id")
        .map(|v| v.trim_start_matches('/').to_string())
        .unwrap_or_else(|| "VOLUME".into());
    let set = |opt: &str| Problem {
        what: format!("volume option {opt} is on"),
        fix: format!("gluster volume set {volume} {opt} off"),
        effect: STALE,
    };
    let mut out = Vec::new();
    let mut write_behind = false;
    let mut flush_behind_off = false;
    let mut current_type = "";
    // Per replicate translator: (bricks, arbiter bricks, favorite-child policy).
    let mut replicas: Vec<(usize, usize, String)> = Vec::new();
    for line in volfile.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix("type ") {
            current_type = t.trim();
            if current_type == "cluster/replicate" {
                replicas.push((0, 0, "none".into()));
            }
            match current_type {
                "performance/quick-read" => out.push(set("performance.quick-read")),
                "performance/md-cache" => out.push(set("performance.stat-prefetch")),
                "performance/open-behind" => out.push(set("performance.open-behind")),
                "performance/write-behind" => write_behind = true,
                _ => {}
            }
        } else if current_type == "performance/write-behind"
            && let Some(v) = line.strip_prefix("option flush-behind ")
        {
            flush_behind_off = matches!(v.trim(), "off" | "false" | "no" | "0" | "disable");
        } else if current_type == "cluster/replicate"
            && let Some(r) = replicas.last_mut()
        {
            if let Some(v) = line.strip_prefix("subvolumes ") {
                r.0 = v.split_whitespace().count();
            } else if let Some(v) = line.strip_prefix("option arbiter-count ") {
                r.1 = v.trim().parse().unwrap_or(0);
            } else if let Some(v) = line.strip_prefix("option favorite-child-policy ") {
                r.2 = v.trim().to_string();
            }
        }
    }
    if write_behind && !flush_behind_off {
        out.push(set("performance.flush-behind"));
    }
    // Majority needs three full copies to vote: replica 2 and arbiter volumes are left alone.
    if replicas
        .iter()
        .any(|(bricks, arbiters, policy)| *bricks >= 3 && *arbiters == 0 && policy != "majority")
    {
        out.push(Problem {
            what: "volume option cluster.favorite-child-policy is not majority".into(),
            fix: format!("gluster volume set {volume} cluster.favorite-child-policy majority"),
            effect: SPLIT_BRAIN,
        });
    }
    let mount_opt = |name: &str| Problem {
        what: format!("mounted with {name} other than 0"),
        fix: format!("mount with -o {name}=0 (fstab: {name}=0)"),
        effect: STALE,
    };
    for (key, name) in [
        ("entry_timeout", "entry-timeout"),
        ("attribute_timeout", "attribute-timeout"),
    ] {
        let value = fuse_private.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().parse::<f64>().ok())?
        });
        // Absent means a GlusterFS that does not show it; only a value that is not 0 is reported.
        if value.is_some_and(|v| v != 0.0) {
            out.push(mount_opt(name));
        }
    }
    let negative = option("negative-timeout").and_then(|v| v.parse::<f64>().ok());
    if negative.is_some_and(|v| v != 0.0) {
        out.push(mount_opt("negative-timeout"));
    }
    out
}

/// The `.meta` directory of the GlusterFS FUSE mount holding `root`; `None` when `root` is not on
/// GlusterFS (or the mount table cannot be read).
pub fn meta_dir(root: &Path) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (mp, fstype) = mount_of(&info, root)?;
    (fstype == "fuse.glusterfs").then(|| mp.join(".meta"))
}

/// Whether the GlusterFS client whose `.meta` directory is `meta` is connected to a quorum of
/// every replica set of its volume (and to every brick that has no replica); `Err` says which set
/// lacks it and which bricks are not connected. Reads the active graph and one small virtual file
/// per brick: no request to any brick.
pub fn quorum(meta: &Path) -> Result<(), String> {
    let active = meta.join("graphs/active");
    let volfile = std::fs::read_to_string(active.join("volfile")).map_err(|e| {
        if e.raw_os_error() == Some(libc::ENOTCONN) {
            // What a client that lost most of its bricks answers for `.meta` too (10.3).
            "the GlusterFS client is short of a quorum of bricks: its mount answers \
             \"transport endpoint is not connected\""
                .to_string()
        } else {
            format!("cannot read {}: {e}", active.join("volfile").display())
        }
    })?;
    quorum_verdict(&volfile, |client| {
        let private = std::fs::read_to_string(active.join(client).join("private")).ok()?;
        private.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "connected").then(|| v.trim() == "1")
        })
    })
}

/// [`quorum`] over the text of the active graph, with `connected` telling, per client translator,
/// whether it is connected (`None`: it does not say, counted as not connected). The quorum of a
/// replica set is GlusterFS's own `auto` rule: more than half of its bricks, or exactly half when
/// the first brick is among them; an explicit `quorum-type fixed` with `quorum-count` is honoured.
pub fn quorum_verdict(
    volfile: &str,
    connected: impl Fn(&str) -> Option<bool>,
) -> Result<(), String> {
    let mut clients: Vec<String> = Vec::new();
    // Per replicate translator: (name, subvolumes, fixed quorum count).
    let mut sets: Vec<(String, Vec<String>, Option<usize>)> = Vec::new();
    let (mut name, mut kind) = ("", "");
    let mut fixed = false;
    for line in volfile.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("volume ") {
            (name, kind, fixed) = (n.trim(), "", false);
        } else if let Some(t) = line.strip_prefix("type ") {
            kind = t.trim();
            match kind {
                "protocol/client" => clients.push(name.to_string()),
                "cluster/replicate" => sets.push((name.to_string(), Vec::new(), None)),
                _ => {}
            }
        } else if kind == "cluster/replicate"
            && let Some(set) = sets.last_mut()
        {
            if let Some(v) = line.strip_prefix("subvolumes ") {
                set.1 = v.split_whitespace().map(str::to_string).collect();
            } else if let Some(v) = line.strip_prefix("option quorum-type ") {
                fixed = v.trim() == "fixed";
            } else if let Some(v) = line.strip_prefix("option quorum-count ") {
                set.2 = v.trim().parse().ok().filter(|_| fixed);
            }
        }
    }
    let up = |c: &String| connected(c) == Some(true);
    for (set, bricks, count) in &sets {
        let n = bricks.len();
        let on: Vec<&String> = bricks.iter().filter(|b| up(b)).collect();
        let has = match count {
            Some(k) => on.len() >= *k,
            None => 2 * on.len() > n || (2 * on.len() == n && bricks.first().is_some_and(&up)),
        };
        if !has {
            let off: Vec<&str> = bricks
                .iter()
                .filter(|b| !up(b))
                .map(String::as_str)
                .collect();
            return Err(format!(
                "the GlusterFS client is connected to {} of the {n} bricks of {set}, short of its quorum (not connected: {})",
                on.len(),
                off.join(", ")
            ));
        }
    }
    // A brick no replica set holds is the only copy of its share of the files.
    let replicated = |c: &String| sets.iter().any(|(_, b, _)| b.contains(c));
    if let Some(c) = clients.iter().find(|c| !replicated(c) && !up(c)) {
        return Err(format!(
            "the GlusterFS client is not connected to {c}, a brick with no replica"
        ));
    }
    Ok(())
}

/// The coherence problems of the storage at `root` when it is on GlusterFS; `None` when it is not,
/// `Err` with a reason when it is but `.meta` cannot be read.
pub fn check(root: &Path) -> Option<Result<Vec<Problem>, String>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (mp, fstype) = mount_of(&info, root)?;
    if fstype != "fuse.glusterfs" {
        return None;
    }
    let meta = mp.join(".meta");
    let read = |rel: &str| {
        std::fs::read_to_string(meta.join(rel))
            .map_err(|e| format!("cannot read {}: {e}", meta.join(rel).display()))
    };
    Some((|| {
        Ok(problems(
            &read("graphs/active/volfile")?,
            &read("root/private")?,
            &read("cmdline")?,
        ))
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "volume v-client-0\n    type protocol/client\nend-volume\n\
        volume v-replicate-0\n    type cluster/replicate\n    option favorite-child-policy majority\n\
        subvolumes v-client-0 v-client-1 v-client-2\nend-volume\n\
        volume v-write-behind\n    type performance/write-behind\n    option flush-behind off\n\
        subvolumes v-utime\nend-volume\nvolume v\n    type debug/io-stats\nend-volume\n";
    const DEFAULTS: &str = "volume v-replicate-0\n    type cluster/replicate\n\
        subvolumes v-client-0 v-client-1 v-client-2\nend-volume\n\
        volume v-write-behind\n    type performance/write-behind\nend-volume\n\
        volume v-quick-read\n    type performance/quick-read\nend-volume\n\
        volume v-open-behind\n    type performance/open-behind\nend-volume\n\
        volume v-md-cache\n    type performance/md-cache\nend-volume\n";
    const PRIVATE_ZERO: &str = "fd = 7\nentry_timeout = 0.000000\nattribute_timeout = 0.000000\n";
    const PRIVATE_DEFAULT: &str = "entry_timeout = 1.000000\nattribute_timeout = 1.000000\n";
    const CMD_ZERO: &str = r#"{ "Cmdlinestr": "/usr/sbin/glusterfs --attribute-timeout=0 --entry-timeout=0 --negative-timeout=0 --volfile-server=vm --volfile-id=/vagabond /mnt/vagabond" }"#;
    const CMD_DEFAULT: &str = r#"{ "Cmdlinestr": "/usr/sbin/glusterfs --negative-timeout=1 --volfile-server=vm --volfile-id=/vagabond /mnt/vagabond" }"#;

    #[test]
    fn the_recommended_settings_have_no_problem() {
        assert_eq!(problems(GOOD, PRIVATE_ZERO, CMD_ZERO), vec![]);
    }

    #[test]
    fn defaults_name_every_setting_and_its_fix() {
        let p = problems(DEFAULTS, PRIVATE_DEFAULT, CMD_DEFAULT);
        let fixes: Vec<&str> = p.iter().map(|p| p.fix.as_str()).collect();
        assert_eq!(
            fixes,
            [
                "gluster volume set vagabond performance.quick-read off",
                "gluster volume set vagabond performance.open-behind off",
                "gluster volume set vagabond performance.stat-prefetch off",
                "gluster volume set vagabond performance.flush-behind off",
                "gluster volume set vagabond cluster.favorite-child-policy majority",
                "mount with -o entry-timeout=0 (fstab: entry-timeout=0)",
                "mount with -o attribute-timeout=0 (fstab: attribute-timeout=0)",
                "mount with -o negative-timeout=0 (fstab: negative-timeout=0)",
            ]
        );
    }

    #[test]
    fn the_policy_is_asked_only_of_three_full_copies() {
        let replicate = |extra: &str, subvolumes: &str| {
            format!(
                "volume v-replicate-0\n    type cluster/replicate\n{extra}    subvolumes {subvolumes}\n\
                 end-volume\nvolume v-write-behind\n    type performance/write-behind\n\
                 option flush-behind off\nend-volume\n"
            )
        };
        let fixes = |volfile: String| -> Vec<String> {
            problems(&volfile, PRIVATE_ZERO, CMD_ZERO)
                .into_iter()
                .map(|p| p.fix)
                .collect()
        };
        assert_eq!(fixes(replicate("", "c0 c1")), Vec::<String>::new());
        assert_eq!(
            fixes(replicate("    option arbiter-count 1\n", "c0 c1 c2")),
            Vec::<String>::new()
        );
        assert_eq!(
            fixes(replicate(
                "    option favorite-child-policy mtime\n",
                "c0 c1 c2"
            )),
            ["gluster volume set vagabond cluster.favorite-child-policy majority"]
        );
        assert_eq!(
            fixes(replicate(
                "    option favorite-child-policy majority\n",
                "c0 c1 c2"
            )),
            Vec::<String>::new()
        );
    }

    #[test]
    fn quorum_is_a_majority_of_each_replica_set() {
        let three = "volume v-client-0\n    type protocol/client\nend-volume\n\
            volume v-client-1\n    type protocol/client\nend-volume\n\
            volume v-client-2\n    type protocol/client\nend-volume\n\
            volume v-replicate-0\n    type cluster/replicate\n\
            subvolumes v-client-0 v-client-1 v-client-2\nend-volume\n";
        let with = |up: &'static [&'static str]| move |c: &str| Some(up.contains(&c));
        assert_eq!(
            quorum_verdict(three, with(&["v-client-0", "v-client-1", "v-client-2"])),
            Ok(())
        );
        assert_eq!(
            quorum_verdict(three, with(&["v-client-1", "v-client-2"])),
            Ok(())
        );
        let e = quorum_verdict(three, with(&["v-client-2"])).unwrap_err();
        assert!(e.contains("1 of the 3 bricks of v-replicate-0"), "{e}");
        assert!(e.contains("not connected: v-client-0, v-client-1"), "{e}");
        // A client that says nothing of its connection counts as not connected.
        assert!(quorum_verdict(three, |_| None).is_err());

        // Replica 2, auto: half is enough only with the first brick.
        let two = "volume v-client-0\n    type protocol/client\nend-volume\n\
            volume v-client-1\n    type protocol/client\nend-volume\n\
            volume v-replicate-0\n    type cluster/replicate\n\
            subvolumes v-client-0 v-client-1\nend-volume\n";
        assert_eq!(quorum_verdict(two, with(&["v-client-0"])), Ok(()));
        assert!(quorum_verdict(two, with(&["v-client-1"])).is_err());

        // quorum-type fixed with a count of 1: one brick is enough.
        let fixed = three.replace(
            "subvolumes v-client-0 v-client-1 v-client-2",
            "option quorum-type fixed\noption quorum-count 1\nsubvolumes v-client-0 v-client-1 v-client-2",
        );
        assert_eq!(quorum_verdict(&fixed, with(&["v-client-2"])), Ok(()));

        // A plain distribute volume: every brick holds the only copy of its files.
        let plain = "volume v-client-0\n    type protocol/client\nend-volume\n\
            volume v-client-1\n    type protocol/client\nend-volume\n\
            volume v-dht\n    type cluster/distribute\n    subvolumes v-client-0 v-client-1\nend-volume\n";
        assert_eq!(
            quorum_verdict(plain, with(&["v-client-0", "v-client-1"])),
            Ok(())
        );
        assert!(quorum_verdict(plain, with(&["v-client-0"])).is_err());
    }

    #[test]
    fn finds_the_mount_holding_a_path_not_yet_created() {
        let info = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
            90 22 0:50 / /tmp rw - tmpfs tmpfs rw\n";
        let (mp, fs) = mount_of(info, Path::new("/tmp/does/not/exist/yet")).unwrap();
        assert_eq!((mp.as_path(), fs.as_str()), (Path::new("/tmp"), "tmpfs"));
    }
}
