//! Another program edits the hosts file while registryd rewrites its block: no edit is lost.

use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use registryd::node::hosts;

#[test]
fn concurrent_edits_of_other_lines_are_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hosts");
    std::fs::write(&path, "127.0.0.1\tlocalhost\n").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let lines = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (path, stop, lines) = (path.clone(), stop.clone(), lines.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                // One write per line, as `echo ... >> /etc/hosts` does.
                let line = format!("10.9.{}.{}\tother{n}\n", n / 250, n % 250);
                f.write_all(line.as_bytes()).unwrap();
                drop(f);
                n += 1;
                lines.store(n, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_micros(300));
            }
            n
        })
    };
    let ip: IpAddr = "169.254.254.254".parse().unwrap();
    // At least 200 rewrites, and on until the other writer got 100 lines in between: on a busy
    // machine it may barely be scheduled during the first 200 (a count, not a clock, decides).
    let mut i = 0;
    while i < 200 || (lines.load(Ordering::SeqCst) < 100 && !writer.is_finished()) {
        let names = vec![(ip, format!("registry{}.home", i % 3))];
        hosts::apply(&path, &names).unwrap();
        i += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        written >= 100,
        "the other writer barely ran ({written} lines)"
    );
    for n in 0..written {
        assert!(
            text.contains(&format!("\tother{n}\n")),
            "line other{n} of {written} was lost"
        );
    }
    assert_eq!(text.matches(hosts::BEGIN).count(), 1);
    assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
}
