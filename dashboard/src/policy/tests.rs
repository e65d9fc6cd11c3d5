use super::*;

const STRICT: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: httpbin-strict\n  namespace: bar\nspec:\n  selector:\n    matchLabels:\n      app: httpbin\n  mtls:\n    mode: STRICT\n";

/// The suggestion edits a policy in force: the rollback applies it again as it is today, ports
/// and all (never the same policy PERMISSIVE).
#[test]
fn an_edited_policy_is_restored_as_it_was() {
    let was = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: httpbin-ports\n  namespace: bar\nspec:\n  selector:\n    matchLabels:\n      app: httpbin\n  mtls:\n    mode: STRICT\n  portLevelMtls:\n    9090:\n      mode: PERMISSIVE\n";
    let rollback = Rollback::Restore {
        namespace: "bar".into(),
        name: "httpbin-ports".into(),
        policy: was.into(),
    };
    let p = PolicyPair::new("workload bar/httpbin".into(), STRICT, Some(&rollback));
    assert_eq!(p.rollback_kind, RollbackKind::Restore);
    assert_eq!(p.rollback_yaml.as_deref(), Some(was));
    let apply = format!("kubectl apply -f - <<'EOF'\n{was}EOF\n");
    assert_eq!(p.rollback_apply.as_deref(), Some(apply.as_str()));
    assert_eq!(p.rollback_command, p.rollback_apply);
    assert_eq!((&p.rollback_note, &p.save_command), (&None, &None));
}

/// The suggestion creates a policy: the rollback deletes it; where the policies in force were
/// not known, it says so and offers to save one of that name first.
#[test]
fn a_new_policy_is_deleted() {
    let rollback = Rollback::Delete {
        namespace: "bar".into(),
        name: "httpbin-strict".into(),
        unchecked: None,
    };
    let p = PolicyPair::new("workload bar/httpbin".into(), STRICT, Some(&rollback));
    assert_eq!(p.rollback_kind, RollbackKind::Delete);
    assert_eq!(
        p.rollback_command.as_deref(),
        Some(
            "kubectl delete peerauthentications.security.istio.io --namespace=bar httpbin-strict\n"
        )
    );
    assert_eq!((&p.rollback_yaml, &p.rollback_apply), (&None, &None));
    assert_eq!((&p.rollback_note, &p.save_command), (&None, &None));

    let unchecked = Rollback::Delete {
        namespace: "bar".into(),
        name: "httpbin-strict".into(),
        unchecked: Some("not known here".into()),
    };
    let p = PolicyPair::new("workload bar/httpbin".into(), STRICT, Some(&unchecked));
    assert_eq!(p.rollback_note.as_deref(), Some("not known here"));
    assert_eq!(
        p.save_command.as_deref(),
        Some("kubectl get peerauthentications.security.istio.io --namespace=bar httpbin-strict -o yaml --ignore-not-found > peerauthentication-before.yaml\n")
    );
}

/// A report that does not say (an older meshwatch): no rollback is made up; the policy the
/// suggestion names is to be saved first. Unreadable YAML: why there is nothing.
#[test]
fn a_rollback_not_said_is_not_made_up() {
    let p = PolicyPair::new("workload bar/httpbin".into(), STRICT, None);
    assert_eq!(p.rollback_kind, RollbackKind::Unknown);
    assert_eq!((&p.rollback_yaml, &p.rollback_command), (&None, &None));
    assert!(p
        .rollback_note
        .as_deref()
        .is_some_and(|n| n.contains("save bar/httpbin-strict if it exists")));
    assert!(p
        .save_command
        .as_deref()
        .is_some_and(|c| c.contains("--namespace=bar httpbin-strict -o yaml")));
    let p = PolicyPair::new("workload x/y".into(), "not: [a, policy", None);
    assert!(p.rollback_yaml.is_none() && p.save_command.is_none() && p.rollback_error.is_some());
}

/// What `sh -c script` prints (it must succeed).
fn sh(script: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap_or_else(|e| panic!("sh: {e}"));
    assert!(out.status.success(), "{script}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The words of a command line as `sh` reads them.
fn shell_words(line: &str) -> Vec<String> {
    sh(&format!("set -- {line}\nprintf '%s\\0' \"$@\""))
        .split_terminator('\0')
        .map(str::to_owned)
        .collect()
}

/// Hostile names reach `kubectl` as one word each, exactly, and never as a flag.
#[test]
fn hostile_names_stay_one_word_each() {
    for (ns, name) in [
        ("bar", "httpbin-strict"),
        ("x'; rm -rf / #", "$(touch /tmp/pwned)`id`"),
        ("a b\nc", "-rf"),
        ("", "'"),
    ] {
        let cmd = delete_command(ns, name);
        let line = cmd.trim_end_matches('\n');
        let words = shell_words(line.trim_start_matches("kubectl delete "));
        let mut want = vec![
            "peerauthentications.security.istio.io".to_owned(),
            format!("--namespace={ns}"),
        ];
        if name.starts_with('-') {
            want.push("--".to_owned());
        }
        want.push(name.to_owned());
        assert_eq!(words, want, "{cmd}");
    }
}

/// The save command's flags stay flags: with a name that starts with `-` (which Kubernetes never
/// gives, a crafted source may), the word after `--` is that name alone — never followed by
/// `-o yaml --ignore-not-found`, which would be read as more names.
#[test]
fn the_save_command_keeps_its_flags_before_the_end_of_flags() {
    let flags = ["-o", "yaml", "--ignore-not-found"].map(str::to_owned);
    for (ns, name) in [("bar", "httpbin-strict"), ("bar", "-rf"), ("a b", "--x y")] {
        let cmd = save_command(ns, name);
        let line = cmd.trim_end_matches('\n');
        let args = line
            .strip_suffix(" > peerauthentication-before.yaml")
            .unwrap_or_else(|| panic!("no redirect into the file: {cmd}"));
        let words = shell_words(args.trim_start_matches("kubectl get "));
        let mut want = vec![RESOURCE.to_owned(), format!("--namespace={ns}")];
        if name.starts_with('-') {
            want.extend(flags.clone());
            want.extend(["--".to_owned(), name.to_owned()]);
        } else {
            want.push(name.to_owned());
            want.extend(flags.clone());
        }
        assert_eq!(words, want, "{cmd}");
    }
}

/// `kubectl apply` of a policy gets the whole YAML on its standard input, whatever its lines:
/// a line `EOF` in it (a crafted source's policy or rollback) does not end the here-document
/// early and run what follows as commands.
#[test]
fn the_here_document_holds_the_whole_yaml() {
    for yaml in [
        STRICT.to_owned(),
        format!("{STRICT}EOF\necho injected\n"),
        format!("EOF\nEOF_1\n{STRICT}EOF_2\necho injected"),
    ] {
        let cmd = apply_command(&yaml);
        // `kubectl` stands in as `cat`: what the shell prints is what kubectl would read
        let read = sh(&format!("kubectl() {{ cat; }}\n{cmd}"));
        let want = if yaml.ends_with('\n') {
            yaml.clone()
        } else {
            format!("{yaml}\n")
        };
        assert_eq!(read, want, "{cmd}");
    }
    assert!(apply_command(STRICT).starts_with("kubectl apply -f - <<'EOF'\n"));
}
