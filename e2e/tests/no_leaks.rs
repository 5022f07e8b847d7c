//! Run last: no upstream key and no Strake token handled during the run is
//! in any log: the operator's, the proxy's, the mock's, etcd's, the
//! kube-apiserver's, the controller manager's, or the test runs' output.

use anyhow::{Result, ensure};
use strake_e2e::env::repo_root;
use strake_e2e::{DevEnv, leaks};

#[test]
fn no_secret_reached_a_log() -> Result<()> {
    let env = DevEnv::load()?;
    let secrets = leaks::secrets(&env)?;
    let files = leaks::log_files(&env)?;
    ensure!(
        !files.is_empty(),
        "no logs found under {}",
        env.dir.display()
    );
    let mut findings = Vec::new();
    let mut bytes = 0;
    for file in &files {
        let text = std::fs::read(file)?;
        bytes += text.len();
        findings.extend(leaks::scan(file, &String::from_utf8_lossy(&text), &secrets));
    }
    let tokens = secrets.iter().filter(|(kind, _)| kind == "token").count();
    println!(
        "searched {} logs ({} MB) for {} secrets ({tokens} tokens issued during the run) and any well-formed token",
        files.len(),
        bytes / 1_000_000,
        secrets.len()
    );
    for f in &findings {
        println!("{}:{}: {}", f.file.display(), f.line, f.what);
    }
    ensure!(
        findings.is_empty(),
        "{} secrets found in logs (listed above)",
        findings.len()
    );
    Ok(())
}

/// On a stack with a node: the egress guard (e2e/cluster/node.sh) dropped
/// no packet, so no pod sent anything anywhere but to the node, a pod or a
/// Service during the whole run.
#[test]
fn no_pod_sent_anything_off_the_node() -> Result<()> {
    let env = DevEnv::load()?;
    if !std::fs::read_to_string(env.dir.join("env"))?.contains("STRAKE_NODE=1") {
        println!("skipped: the stack has no node");
        return Ok(());
    }
    let out = std::process::Command::new(repo_root().join("e2e/cluster/node.sh"))
        .arg(&env.cluster_dir)
        .arg("guard")
        .output()?;
    ensure!(
        out.status.success(),
        "node.sh guard: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dropped = String::from_utf8_lossy(&out.stdout).trim().to_string();
    println!("egress guard: {dropped} packets dropped");
    ensure!(
        dropped == "0",
        "the egress guard dropped {dropped} packets from pods"
    );
    Ok(())
}
