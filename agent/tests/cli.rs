//! The `meshwatch` binary end to end: the JSON contract, inputs (files, stdin, several files,
//! byte orders), errors and exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meshwatch"))
}

fn pcaps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcaps")
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run meshwatch")
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

fn tmp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshwatch-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write tmp");
    p
}

fn before() -> String {
    pcaps()
        .join("istio-migration-before.pcap")
        .display()
        .to_string()
}

fn workloads() -> String {
    pcaps()
        .join("istio-migration-before.workloads.yaml")
        .display()
        .to_string()
}

#[test]
fn json_contract_fields() {
    let v = json_of(&run(&[
        "analyze",
        "--format",
        "json",
        "--flows",
        "--workloads",
        &workloads(),
        &before(),
    ]));
    for key in ["packets", "bytes", "flows", "decode_errors", "security"] {
        assert!(v["summary"].get(key).is_some(), "summary.{key}");
    }
    let flows = v["flows"].as_array().expect("flows");
    assert_eq!(
        flows.len() as u64,
        v["summary"]["flows"].as_u64().expect("count")
    );
    for key in [
        "src",
        "sport",
        "dst",
        "dport",
        "security",
        "app",
        "alpn",
        "sni",
        "packets",
        "bytes",
        "first_seen",
        "last_seen",
        "mid_stream",
        "tunnel",
        "server_hello",
    ] {
        assert!(flows.iter().all(|f| f.get(key).is_some()), "flows[].{key}");
    }
    let mtls = flows
        .iter()
        .find(|f| f["security"] == "istio_mtls")
        .expect("an mTLS flow");
    assert_eq!(
        mtls["alpn"],
        serde_json::json!(["istio-peer-exchange", "istio"])
    );
    assert_eq!(mtls["mesh"], "sidecar");
    assert!(mtls["first_seen"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z') && t.contains('T')));
    assert!(v["edges"].as_array().is_some_and(|e| !e.is_empty()));
    let verdicts = v["verdicts"].as_array().expect("verdicts");
    let foo = verdicts
        .iter()
        .find(|x| x["namespace"] == "foo" && x["workload"] == "httpbin")
        .expect("foo/httpbin");
    assert_eq!(foo["verdict"], "blocked");
    let b = &foo["blockers"][0];
    assert_eq!(
        (b["namespace"].as_str(), b["workload"].as_str()),
        (Some("legacy"), Some("sleep"))
    );
    for key in ["security", "port", "connections", "last_seen"] {
        assert!(b.get(key).is_some(), "blockers[].{key}");
    }
    assert!(foo.get("exempted").is_some() && foo.get("suggested_policy").is_some());
    // without --flows there is no flows key
    let v = json_of(&run(&["analyze", "--format", "json", &before()]));
    assert!(v.get("flows").is_none());
    // without identities, destinations are addresses
    assert!(v["verdicts"]
        .as_array()
        .expect("verdicts")
        .iter()
        .all(|x| x.get("ip").is_some()));
}

#[test]
fn table_is_plain_when_piped_and_coloured_on_request() {
    let out = run(&["analyze", "--workloads", &workloads(), &before()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("EDGES") && text.contains("VERDICTS"));
    assert!(text.contains("legacy/sleep") && text.contains("blocked"));
    assert!(text.contains("kind: PeerAuthentication"));
    assert!(!text.contains('\x1b'));
    // client-only workloads are summed up in one line, not a row each
    let idle = text
        .lines()
        .find(|l| l.starts_with("no inbound connections"))
        .expect("idle line");
    for w in ["foo/sleep", "bar/sleep", "legacy/sleep"] {
        assert!(idle.contains(w), "{idle}");
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with(w) && l.contains("insufficient")),
            "{w} has a row"
        );
    }
    let out = run(&["analyze", "--color", "always", &before()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\x1b[31m"));
}

#[test]
fn stdin_and_several_files() {
    let bytes = std::fs::read(before()).expect("pcap");
    let mut child = bin()
        .args(["analyze", "--format", "json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&bytes).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    let from_stdin = json_of(&out);
    let from_file = json_of(&run(&["analyze", "--format", "json", &before()]));
    assert_eq!(
        from_stdin["summary"]["flows"],
        from_file["summary"]["flows"]
    );
    let after = pcaps()
        .join("istio-migration-after.pcap")
        .display()
        .to_string();
    let both = json_of(&run(&["analyze", "--format", "json", &before(), &after]));
    let one = |v: &Value| v["summary"]["flows"].as_u64().expect("flows");
    let a = json_of(&run(&["analyze", "--format", "json", &after]));
    assert_eq!(one(&both), one(&from_file) + one(&a));
    let files = both["summary"]["files"].as_array().expect("files");
    assert_eq!(files.len(), 2);
    assert!(files.iter().all(|f| f["packets"].as_u64() > Some(0)
        && f["compression"] == "none"
        && f["truncated"] == false
        && f["link_types"] == serde_json::json!([1])));
}

/// gzip and zstd captures are read by their magic bytes; a directory is walked for captures;
/// the same capture given twice counts every connection once.
#[test]
fn compressed_directories_and_the_same_capture_twice() {
    use std::io::Write;
    let raw = std::fs::read(before()).expect("capture");
    let dir = std::env::temp_dir().join(format!("meshwatch-multi-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).expect("dir");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).expect("gzip");
    let gz_path = dir.join("before.pcap.gz");
    std::fs::write(&gz_path, gz.finish().expect("gzip")).expect("write");
    let zst_path = dir.join("sub/before.pcap.zst");
    std::fs::write(&zst_path, zstd::encode_all(&raw[..], 3).expect("zstd")).expect("write");
    std::fs::write(dir.join("README.txt"), b"not a capture").expect("write");
    let flows = |v: &Value| v["summary"]["flows"].as_u64().expect("flows");
    let plain = json_of(&run(&["analyze", "--format", "json", &before()]));
    for (path, compression) in [(&gz_path, "gzip"), (&zst_path, "zstd")] {
        let v = json_of(&run(&[
            "analyze",
            "--format",
            "json",
            &path.display().to_string(),
        ]));
        assert_eq!(flows(&v), flows(&plain), "{}", path.display());
        assert_eq!(v["summary"]["files"][0]["compression"], compression);
        assert_eq!(v["verdicts"], plain["verdicts"]);
    }
    // the directory holds the same capture twice (gzip and zstd): it counts once
    let v = json_of(&run(&[
        "analyze",
        "--format",
        "json",
        &dir.display().to_string(),
    ]));
    assert_eq!(v["summary"]["files"].as_array().map(Vec::len), Some(2));
    assert_eq!(flows(&v), flows(&plain));
    assert_eq!(v["summary"]["security"], plain["summary"]["security"]);
    assert_eq!(v["verdicts"], plain["verdicts"]);
    let twice = json_of(&run(&["analyze", "--format", "json", &before(), &before()]));
    assert_eq!(twice["summary"]["security"], plain["summary"]["security"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rewrite a little-endian microsecond pcap as big-endian, record by record.
fn to_big_endian(le: &[u8]) -> Vec<u8> {
    let u32le = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut out = Vec::with_capacity(le.len());
    out.extend_from_slice(&0xa1b2_c3d4u32.to_be_bytes());
    out.extend_from_slice(&u16::from_le_bytes([le[4], le[5]]).to_be_bytes());
    out.extend_from_slice(&u16::from_le_bytes([le[6], le[7]]).to_be_bytes());
    for at in [8, 12, 16, 20] {
        out.extend_from_slice(&u32le(le, at).to_be_bytes());
    }
    let mut pos = 24;
    while pos + 16 <= le.len() {
        for f in 0..4 {
            out.extend_from_slice(&u32le(le, pos + 4 * f).to_be_bytes());
        }
        let caplen = u32le(le, pos + 8) as usize;
        out.extend_from_slice(&le[pos + 16..pos + 16 + caplen]);
        pos += 16 + caplen;
    }
    out
}

#[test]
fn big_endian_pcap_reads_the_same() {
    let le = std::fs::read(before()).expect("pcap");
    assert_eq!(
        &le[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "fixture is little-endian microsecond"
    );
    let be = tmp("big-endian.pcap", &to_big_endian(&le));
    let a = json_of(&run(&["analyze", "--format", "json", "--flows", &before()]));
    let b = json_of(&run(&[
        "analyze",
        "--format",
        "json",
        "--flows",
        &be.display().to_string(),
    ]));
    assert_eq!(a["flows"], b["flows"]);
    assert_eq!(a["verdicts"], b["verdicts"]);
}

fn empty_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("meshwatch-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[test]
fn bad_inputs_are_one_line_errors_with_exit_code_2() {
    let not_capture = tmp(
        "notes.txt",
        b"this is not a capture file at all, just some text\n",
    );
    let empty = tmp("empty.pcap", b"");
    let cases: Vec<(String, &str)> = vec![
        (
            not_capture.display().to_string(),
            "not a pcap or pcapng capture",
        ),
        (empty.display().to_string(), "empty file"),
        ("/nonexistent/x.pcap".to_owned(), "cannot open"),
        (empty_dir().display().to_string(), "holds no capture"),
    ];
    for (path, message) in cases {
        let out = run(&["analyze", &path]);
        assert_eq!(out.status.code(), Some(2), "{path}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(
            err.contains(&path) && err.contains(message),
            "{path}: {err}"
        );
        assert!(out.stdout.is_empty());
    }
    let bad_workloads = tmp("w.yaml", b"workloads: [ {namespace: a} ]\n");
    let out = run(&[
        "analyze",
        "--workloads",
        &bad_workloads.display().to_string(),
        &before(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("w.yaml") && err.contains("invalid workloads file"),
        "{err}"
    );
    let out = run(&["analyze", "--min-connections", "many", &before()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_truncated_last_record_is_a_warning() {
    let whole = std::fs::read(before()).expect("pcap");
    let cut = tmp("cut.pcap", &whole[..whole.len() - 7]);
    let out = run(&["analyze", "--format", "json", &cut.display().to_string()]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning:") && err.contains("cut.pcap") && err.contains("truncated"),
        "{err}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let full = json_of(&run(&["analyze", "--format", "json", &before()]));
    assert_eq!(
        v["summary"]["packets"].as_u64(),
        full["summary"]["packets"].as_u64().map(|n| n - 1)
    );
    assert_eq!(
        v["summary"]["truncated_files"].as_array().map(Vec::len),
        Some(1)
    );
}

#[test]
fn payload_bytes_are_never_in_the_output() {
    // the plaintext requests in this capture carry curl's request line and headers
    let out = run(&[
        "analyze",
        "--format",
        "json",
        "--flows",
        "--workloads",
        &workloads(),
        &before(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for payload in ["GET /", "HTTP/1.1", "User-Agent", "curl/", "Host:"] {
        assert!(
            !text.contains(payload),
            "payload {payload:?} leaked into the report"
        );
    }
    // what is exported of a ClientHello: ALPN and SNI only
    assert!(
        text.contains("istio-peer-exchange")
            && text.contains("outbound_.8000_._.httpbin.foo.svc.cluster.local")
    );
}

/// The threads of a running process.
fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// Whether a thread of the process waits in a read of a pipe (its standard input).
fn reads_a_pipe(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("wchan")).is_ok_and(|w| w.contains("pipe_read"))
    })
}

/// `--helper-threads`: `never` (here through its variable) keeps an analysis to one thread,
/// `always` adds the read-ahead and the folding thread even where the process may use one core
/// only (`taskset -c 0`, where `auto` adds none); the report is the same. Counted once the
/// process waits for the rest of its standard input.
#[test]
fn helper_threads_start_only_when_asked() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let capture = std::fs::read(before()).expect("a capture in pcaps/");
    let args = ["analyze", "--format", "json", "-"];
    let mut never = bin();
    never.args(args).env("MESHWATCH_HELPER_THREADS", "never");
    let mut always = Command::new("taskset");
    always
        .args(["-c", "0", env!("CARGO_BIN_EXE_meshwatch")])
        .args(args)
        .args(["--helper-threads", "always"]);
    let mut reports = Vec::new();
    for (what, mut command, threads) in [("never", never, 1), ("always", always, 3)] {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run meshwatch (and taskset)");
        let mut stdin = child.stdin.take().expect("its stdin");
        stdin.write_all(&capture[..1000]).expect("the first bytes");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(reads_a_pipe(child.id()) && threads_of(child.id()) >= threads)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let waiting = reads_a_pipe(child.id());
        let seen = threads_of(child.id());
        stdin.write_all(&capture[1000..]).expect("the rest");
        drop(stdin);
        let out = child.wait_with_output().expect("its output");
        assert!(
            waiting,
            "--helper-threads {what}: never seen reading its input"
        );
        assert_eq!(seen, threads, "--helper-threads {what}");
        reports.push(json_of(&out));
    }
    assert_eq!(reports[0], reports[1]);
    // and never beside workers, where it would mean nothing
    let out = run(&[
        "analyze",
        "--threads",
        "2",
        "--helper-threads",
        "never",
        &before(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--helper-threads never") && err.contains("--threads 2"),
        "{err}"
    );
}

#[test]
fn help_explains_itself() {
    let out = run(&["analyze", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--workloads",
        "--format",
        "--flows",
        "--min-connections",
        "--exempt-port",
        "Examples:",
        "Exit status",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}");
    }
    assert!(run(&["--version"]).status.success());
}
