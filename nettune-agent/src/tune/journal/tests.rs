use super::*;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nettune-journal-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

#[test]
fn a_change_removes_what_an_interrupted_earlier_write_left() {
    // A writer killed (or out of disk) between creating its temporary file
    // and the rename leaves it behind; the next change, under the same
    // exclusive lock, removes it.
    let d = dir("leftover-tmp");
    let mut j = Journal::open(&d).unwrap();
    let leftover = d.join("journal.json.tmp.4194300");
    fs::write(&leftover, "{\"version\": 1, \"entri").unwrap();
    j.record_intent("net.core.somaxconn", &Target::Node, "4096", None, "8192", 1)
        .unwrap();
    assert!(
        !leftover.exists(),
        "the leftover temporary file is still there"
    );
    let names: Vec<String> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.contains(".tmp.")),
        "temporary files left: {names:?}"
    );
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn originals_survive_a_reopen_and_are_recorded_once() {
    let d = dir("reopen");
    let mut j = Journal::open(&d).unwrap();
    j.record_intent(
        "net.core.somaxconn",
        &Target::Node,
        "4096",
        None,
        "8192",
        1000,
    )
    .unwrap();
    j.record_write("net.core.somaxconn", &Target::Node, "8192")
        .unwrap();
    // A second intent (after our own write) must not replace the original.
    j.record_intent(
        "net.core.somaxconn",
        &Target::Node,
        "8192",
        None,
        "16384",
        2000,
    )
    .unwrap();
    let j = Journal::open(&d).unwrap();
    let e = j.entry("net.core.somaxconn", &Target::Node).unwrap();
    assert_eq!(e.original, "4096");
    assert_eq!(e.last_written.as_deref(), Some("8192"));
    assert_eq!(e.pending.as_deref(), Some("16384"));
    assert_eq!(e.writes, vec![1000, 2000]);
    fs::remove_dir_all(d).unwrap();
}

#[test]
fn write_history_keeps_one_hour() {
    let d = dir("history");
    let mut j = Journal::open(&d).unwrap();
    for t in [0, 1000, 3000, 4000] {
        j.record_intent("net.core.somaxconn", &Target::Node, "1", None, "2", t)
            .unwrap();
    }
    assert_eq!(
        j.entry("net.core.somaxconn", &Target::Node).unwrap().writes,
        vec![1000, 3000, 4000]
    );
    fs::remove_dir_all(d).unwrap();
}

#[test]
fn a_corrupt_journal_is_refused_not_replaced() {
    let d = dir("corrupt");
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join(FILE), "{not json").unwrap();
    let err = Journal::open(&d).unwrap_err().to_string();
    assert!(err.contains("is corrupt"), "{err}");
    assert_eq!(fs::read_to_string(d.join(FILE)).unwrap(), "{not json");
    fs::remove_dir_all(d).unwrap();
}

#[test]
fn two_writers_never_undo_each_others_changes() {
    // The daemon and `nettune rollback` hold the same journal.
    let d = dir("two-writers");
    let mut daemon = Journal::open(&d).unwrap();
    daemon
        .record_intent("net.core.somaxconn", &Target::Node, "4096", None, "8192", 0)
        .unwrap();
    let mut rollback = Journal::open(&d).unwrap();
    rollback
        .remove("net.core.somaxconn", &Target::Node)
        .unwrap();
    // The daemon journals something else: the removed entry must stay removed.
    daemon
        .record_intent(
            "net.ipv4.tcp_max_syn_backlog",
            &Target::Node,
            "1024",
            None,
            "2048",
            0,
        )
        .unwrap();
    let names: Vec<String> = Journal::open(&d)
        .unwrap()
        .entries()
        .iter()
        .map(|e| e.sysctl.clone())
        .collect();
    assert_eq!(names, ["net.ipv4.tcp_max_syn_backlog"]);
    fs::remove_dir_all(d).unwrap();
}
